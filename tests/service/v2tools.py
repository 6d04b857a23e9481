"""What the Open Inference Protocol tests share: request bodies, the error check, pixels as /classify sees
them, and binary requests and responses spelled as KServe's client spells them."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import httpx
import numpy as np

from service.images import decode_image

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
