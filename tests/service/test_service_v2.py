"""Open Inference Protocol v2 inference: tritonclient against a real uvicorn server, in JSON and binary."""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from servicetools import Server, encode, picture, start
from tritonclient.utils import InferenceServerException
from v2tools import b64, body_of, check_outputs, classify, pixels_of

from benchmarks.harness import free_port
from service.tensors import OUTPUTS

SNN_OUTPUTS = [name for name, output in OUTPUTS.items() if output.engine is None]


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``python -m service`` serving the tiny models on a free port."""
    port = free_port()
    argv = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    env = {
        "TSC_MODEL_DIR": str(model_dir),
        "TSC_DEFAULT_MODEL": "tiny",
        "TSC_RATE_STEPS": "8",
        "TSC_TORCH_THREADS": "1",
        "TSC_MAX_BATCH_DELAY_MS": "2",
    }
    server = start(argv, env, tmp_path_factory.mktemp("log") / "server.log", port)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def triton_client(server: Server) -> Iterator[triton.InferenceServerClient]:
    """A tritonclient HTTP client of the server."""
    with triton.InferenceServerClient(server.url.removeprefix("http://")) as client:
        yield client


def pixel_input(pixels: np.ndarray, datatype: str = "FP32") -> triton.InferInput:
    """The ``pixels`` input, sent as JSON."""
    tensor = triton.InferInput("pixels", list(pixels.shape), datatype)
    return tensor.set_data_from_numpy(pixels, binary_data=False)


def image_input(*images: bytes) -> triton.InferInput:
    """The ``image`` input: the encoded images as base64 strings, sent as JSON."""
    encoded = np.array([base64.b64encode(image) for image in images], dtype=np.object_)
    return triton.InferInput("image", [len(images)], "BYTES").set_data_from_numpy(encoded, binary_data=False)


def binary_pixels(pixels: np.ndarray) -> triton.InferInput:
    """The ``pixels`` input as tritonclient sends it by default: binary data after the JSON."""
    return triton.InferInput("pixels", list(pixels.shape), "FP32").set_data_from_numpy(pixels)


def binary_images(*images: bytes) -> triton.InferInput:
    """The ``image`` input as tritonclient sends it by default: the files' bytes, each after its length."""
    encoded = np.array(images, dtype=np.object_)
    return triton.InferInput("image", [len(images)], "BYTES").set_data_from_numpy(encoded)


def asking(*names: str) -> list[triton.InferRequestedOutput]:
    """These outputs, asked for as JSON."""
    return [triton.InferRequestedOutput(name, binary_data=False) for name in names]


def test_server_and_model_readiness_and_metadata(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    server_metadata = triton_client.get_server_metadata()
    assert server_metadata["name"] == "tsc-snn" and server_metadata["extensions"] == ["binary_tensor_data"]
    assert triton_client.is_model_ready("tiny") and triton_client.is_model_ready("tiny", "1")
    assert not triton_client.is_model_ready("tiny", "2") and not triton_client.is_model_ready("nope")
    meta = triton_client.get_model_metadata("tiny")
    assert meta == triton_client.get_model_metadata("tiny", "1")
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {
            "name": "pixels",
            "datatype": "FP32",
            "shape": [-1, 3, 32, 32],
            "parameters": {"range": [0.0, 1.0], "layout": "NCHW", "mode": "RGB"},
        },
        {
            "name": "image",
            "datatype": "BYTES",
            "shape": [-1],
            "parameters": {
                "encoding": "base64 in JSON, raw as binary data",
                "formats": "JPEG, PNG, WebP, BMP, GIF",
            },
        },
    ]
    outputs = {o["name"]: (o["datatype"], o["shape"], o.get("parameters")) for o in meta["outputs"]}
    assert outputs["logits"] == ("FP32", [-1, 10], None)
    assert outputs["spikes"] == ("INT64", [-1], None)
    assert outputs["rate_spikes"] == ("INT64", [-1], {"compare": True})
    assert list(outputs) == list(OUTPUTS)
    assert triton_client.get_model_metadata("tiny-gray")["inputs"][0]["shape"] == [-1, 1, 28, 28]


def test_fp32_inference_with_compare_equals_classify(
    server: Server, triton_client: triton.InferenceServerClient
) -> None:
    png = encode(picture())
    result = triton_client.infer(
        "tiny",
        [pixel_input(pixels_of(png))],
        outputs=asking(*OUTPUTS),
        request_id="fp32-1",
        parameters={"compare": True},
    )
    response = result.get_response()
    assert response["model_name"] == "tiny" and response["model_version"] == "1"
    assert response["id"] == "fp32-1"
    assert response["parameters"] == {"engine": "fast", "compare": True}
    assert [o["name"] for o in response["outputs"]] == list(OUTPUTS)
    assert result.as_numpy("logits").shape == (1, 10)
    check_outputs(result, classify(server, png, compare="true"))


def test_bytes_inference_of_two_images_equals_classify(
    server: Server, triton_client: triton.InferenceServerClient
) -> None:
    images = encode(picture()), encode(picture(size=(64, 80)), "JPEG")
    result = triton_client.infer("tiny", [image_input(*images)], outputs=asking(*SNN_OUTPUTS))
    assert "id" not in result.get_response()
    assert result.as_numpy("probabilities").shape == (2, 10)
    check_outputs(result, classify(server, *images))


def test_binary_fp32_in_tritonclients_default_mode_equals_classify(
    server: Server, triton_client: triton.InferenceServerClient
) -> None:
    """No outputs listed: tritonclient asks for every output as binary data (binary_data_output)."""
    images = encode(picture()), encode(picture(size=(30, 50)))
    pixels = np.concatenate([pixels_of(image) for image in images])
    result = triton_client.infer(
        "tiny", [binary_pixels(pixels)], request_id="b-1", parameters={"compare": True}
    )
    response = result.get_response()
    assert response["id"] == "b-1" and response["parameters"] == {"engine": "fast", "compare": True}
    assert [o["name"] for o in response["outputs"]] == list(OUTPUTS)
    for output in response["outputs"]:
        count = 2 * (10 if output["name"].endswith(("logits", "probabilities")) else 1)
        assert output["parameters"] == {
            "binary_data_size": count * (4 if output["datatype"] == "FP32" else 8)
        }
        assert "data" not in output
    check_outputs(result, classify(server, *images, compare="true"))


def test_binary_images_and_outputs_binary_or_json_as_each_asks(
    server: Server, triton_client: triton.InferenceServerClient
) -> None:
    images = encode(picture(), "JPEG"), encode(picture(size=(64, 80)))
    rest = [name for name in SNN_OUTPUTS if name not in ("logits", "probabilities", "spikes")]
    outputs = [
        triton.InferRequestedOutput("probabilities"),  # binary by default
        triton.InferRequestedOutput("spikes", binary_data=False),
        *asking(*rest),
        triton.InferRequestedOutput("logits"),
    ]
    result = triton_client.infer("tiny", [binary_images(*images)], outputs=outputs)
    in_json = {o["name"]: "data" in o for o in result.get_response()["outputs"]}
    assert in_json == {"probabilities": False, "spikes": True} | dict.fromkeys(rest, True) | {"logits": False}
    assert list(in_json) == ["probabilities", "spikes", *rest, "logits"]
    check_outputs(result, classify(server, *images))


def test_default_outputs_subsets_and_versions(
    server: Server, triton_client: triton.InferenceServerClient
) -> None:
    body = body_of("image", "BYTES", [1], [b64(encode(picture()))])
    every = httpx.post(f"{server.url}/v2/models/tiny/infer", json=body).json()["outputs"]
    assert [o["name"] for o in every] == SNN_OUTPUTS  # no baselines without compare
    subset = triton_client.infer(
        "tiny",
        [image_input(encode(picture()))],
        model_version="1",
        outputs=asking("spikes", "probabilities"),
        parameters={"engine": "stepped"},
    )
    assert [o["name"] for o in subset.get_response()["outputs"]] == ["spikes", "probabilities"]
    assert subset.get_response()["parameters"]["engine"] == "stepped"
    fast = {o["name"]: o["data"] for o in every}
    assert subset.as_numpy("spikes").tolist() == fast["spikes"]  # stepped agrees with fast exactly
    versioned = httpx.post(f"{server.url}/v2/models/tiny/versions/1/infer", json=body)
    assert versioned.status_code == 200 and versioned.json()["model_version"] == "1"


def refused(call: Any, status: int, words: str) -> None:
    """``call()`` raises the client's error with ``status`` and a message containing ``words``."""
    with pytest.raises(InferenceServerException) as error:
        call()
    assert error.value.status() == str(status), error.value
    assert words in error.value.message(), error.value


def test_errors_through_the_client(triton_client: triton.InferenceServerClient) -> None:
    good = pixels_of(encode(picture()))
    infer = triton_client.infer
    outputs = asking("logits")
    small = pixel_input(good[:, :, :28, :28])
    refused(lambda: infer("tiny", [small], outputs=outputs), 400, "this model takes [N, 3, 32, 32]")
    as_fp64 = pixel_input(good.astype(np.float64), datatype="FP64")
    refused(lambda: infer("tiny", [as_fp64], outputs=outputs), 400, "must be FP32, not FP64")
    refused(lambda: infer("tiny", [pixel_input(good * 2)], outputs=outputs), 400, "numbers in [0, 1]")
    refused(lambda: infer("nope", [pixel_input(good)], outputs=outputs), 404, "'nope' is not loaded")
    refused(lambda: infer("tiny", [pixel_input(good)], "2", outputs), 404, "no version '2'")
    refused(lambda: infer("tiny", [pixel_input(good)], outputs=asking("nope")), 400, "unknown output 'nope'")
    refused(lambda: infer("tiny", [pixel_input(good)], outputs=asking("ann_logits")), 400, "compare=true")
    refused(lambda: infer("tiny", [image_input(b"not an image")], outputs=outputs), 400, "image[0]: ")
    # in binary form (tritonclient's default) too
    refused(lambda: infer("tiny", [binary_pixels(good * 2)]), 400, "; pixels must be numbers in [0, 1]")
    refused(lambda: infer("tiny", [binary_pixels(good[:, :, :28])]), 400, "this model takes [N, 3, 32, 32]")
    refused(lambda: infer("tiny", [binary_images(b"not an image")]), 400, "image[0]: ")
    refused(
        lambda: infer("tiny", [binary_pixels(good)], outputs=asking("nope")), 400, "unknown output 'nope'"
    )


def test_bad_json_over_the_wire(server: Server) -> None:
    response = httpx.post(f"{server.url}/v2/models/tiny/infer", content=b'{"inputs": [', timeout=30)
    assert response.status_code == 400 and set(response.json()) == {"error"}
    assert response.json()["error"].startswith("the body is not valid JSON")
