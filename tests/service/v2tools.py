"""What the Open Inference Protocol tests share: request bodies, the error check, pixels as /classify sees
them, binary requests and responses spelled as KServe's client spells them, and outputs checked against
/classify's answers."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import httpx
import numpy as np
from servicetools import Server

from service.images import decode_image
from service.tensors import OUTPUTS

HEADER = "Inference-Header-Content-Length"
PIXELS = [0.5] * (3 * 32 * 32)
DTYPES = {"FP32": "<f4", "INT64": "<i8"}


def pixels_of(data: bytes) -> np.ndarray:
    """The image decoded as /classify decodes it for ``tiny``: float32 [1, 3, 32, 32] in [0, 1]."""
    return decode_image(data, None, 3, 32, 32, 10**8).numpy()[None]


def b64(data: bytes) -> str:
    """``data`` as a base64 string."""
    return base64.b64encode(data).decode()


def body_of(name: str, datatype: str, shape: list[int], data: list[Any], **extra: Any) -> dict:
    """An inference request body with one input."""
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}], **extra}


def check(response: httpx.Response, status: int, words: str) -> None:
    """``response`` is the protocol's error: ``status`` and ``{"error": message}`` containing ``words``."""
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and words in response.json()["error"], response.text


def serialized(*elements: bytes) -> bytes:
    """BYTES elements in binary form: each one's length in 4 little-endian bytes, then its bytes."""
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def binary_request(body: dict, *data: bytes) -> tuple[bytes, dict[str, str]]:
    """Body and headers as KServe's client sends them (InferRequest.to_rest: orjson's compact JSON, data)."""
    header = json.dumps(body, separators=(",", ":")).encode()
    headers = {HEADER: str(len(header)), "content-type": "application/octet-stream"}
    return header + b"".join(data), headers


def binary_input(name: str, datatype: str, shape: list[int], data: bytes) -> dict:
    """An input whose data is ``data`` after the JSON (``parameters.binary_data_size``)."""
    return {"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": len(data)}}


def parse(response: httpx.Response) -> tuple[dict, dict[str, np.ndarray]]:
    """A response's JSON and every output as an array, as KServe's InferResponse.from_bytes reads them."""
    assert response.status_code == 200, response.text
    length = int(response.headers.get(HEADER, len(response.content)))
    answer = json.loads(response.content[:length])
    arrays, start = {}, length
    for output in answer["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            values = np.array(output["data"], dtype=DTYPES[output["datatype"]])
        else:
            assert "data" not in output, output
            values = np.frombuffer(response.content[start : start + size], dtype=DTYPES[output["datatype"]])
            start += size
        arrays[output["name"]] = values.reshape(output["shape"])
    assert start == len(response.content), "bytes after the last binary output"
    return answer, arrays


def classify(server: Server, *images: bytes, **params: Any) -> list[dict]:
    """What POST /classify/batch answers for ``images``, with every class's probability."""
    files = [("files", (f"{i}.png", image)) for i, image in enumerate(images)]
    response = httpx.post(f"{server.url}/classify/batch", params={"top_k": 10, **params}, files=files)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def probabilities(predictions: list[dict]) -> list[float]:
    """Every class's probability, in class order, from /classify's predictions with top_k = classes."""
    return [p["probability"] for p in sorted(predictions, key=lambda p: p["index"])]


def expected(answer: dict) -> dict[str, Any]:
    """The v2 outputs /classify's ``answer`` implies (logits are checked through their softmax)."""
    operations = answer["operations"]
    outputs = {
        "probabilities": probabilities(answer["predictions"]),
        "timesteps": answer["latency"]["timesteps"],
        "spikes": answer["spikes"]["total"],
        "synaptic_additions": operations["synaptic_additions"],
        "memory_accesses": operations["memory_accesses"],
        "neuron_updates": operations["neuron_updates"],
        "energy_pj": operations["energy"]["snn_pj"],
    }
    if answer["comparison"] is not None:
        ann, rate = answer["comparison"]["ann"], answer["comparison"]["rate"]
        outputs |= {
            "ann_probabilities": probabilities(ann["predictions"]),
            "ann_macs": ann["macs"],
            "ann_energy_pj": ann["energy_pj"],
            "rate_probabilities": probabilities(rate["predictions"]),
            "rate_memory_accesses": rate["synaptic_additions"],  # one weight read per addition
            **{f"rate_{key}": rate[key] for key in ("timesteps", "spikes", "synaptic_additions")},
            "rate_neuron_updates": rate["neuron_updates"],
            "rate_energy_pj": rate["energy_pj"],
        }
    return outputs


def check_outputs(result: Any, answers: list[dict]) -> None:
    """Every output of ``result`` (tritonclient's InferResult, HTTP or gRPC) agrees with /classify's
    ``answers``: counts exactly, floats to 1e-6."""
    for name, output in OUTPUTS.items():
        got = result.as_numpy(name)
        if answers[0]["comparison"] is None and output.engine is not None:
            assert got is None, name
            continue
        assert got.dtype == (np.float32 if output.datatype == "FP32" else np.int64), name
        if name.endswith("logits"):
            softmax = np.exp(got.astype(np.float64))
            softmax /= softmax.sum(axis=1, keepdims=True)
            want = result.as_numpy(name.replace("logits", "probabilities"))
            np.testing.assert_allclose(softmax, want, rtol=0, atol=1e-6, err_msg=name)
            continue
        want = np.array([expected(answer)[name] for answer in answers])
        if output.datatype == "INT64":
            np.testing.assert_array_equal(got, want, err_msg=name)
        elif output.per_class:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=name)
