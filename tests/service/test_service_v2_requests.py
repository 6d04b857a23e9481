"""Open Inference Protocol v2 requests in JSON, in-process: each malformed one's 400 naming the problem, the
other errors in the protocol's shape, and the bodies KServe's client sends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from servicetools import serve, settings_for
from v2tools import PIXELS, body_of, check


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "words"),
    [
        (body_of("pixels", "FP32", [1, 3, 32, 32], PIXELS[:-1]), "needs 3072 elements, data has 3071"),
        (body_of("pixels", "FP32", [1, 3, 32, 32], [*PIXELS[:-1], "0.5"]), "element 3071 is '0.5'; pixels"),
        (body_of("pixels", "FP32", [1, 3, 32, 32], [None, *PIXELS[1:]]), "element 0 is None; pixels must"),
        (body_of("pixels", "FP32", [1, 3, 32, 32], [True, *PIXELS[1:]]), "must be numbers in [0, 1]"),
        (body_of("pixels", "FP32", [1, 3, 32, 32], [10**400, *PIXELS[1:]]), "must be numbers in [0, 1]"),
        (body_of("pixels", "FP32", [0, 3, 32, 32], []), "N >= 1"),
        (body_of("pixels", "FP32", [3072], PIXELS), "this model takes [N, 3, 32, 32]"),
        (body_of("pixels", "FP32", [1, 3, 32, 32], [*PIXELS[:-1], -0.1]), "element 3071 is -0.1; pixels"),
        (body_of("image", "BYTES", [2], ["aGk="]), "needs 2 elements, data has 1"),
        (body_of("image", "BYTES", [1], [7]), "BYTES elements must be base64 strings"),
        (body_of("image", "BYTES", [1], ["%%%"]), "image[0] is not valid base64"),
        (body_of("image", "BYTES", [1, 1], [["aGk="]]), "send [N]"),
        (body_of("image", "FP32", [1], [0.5]), "must be BYTES, not FP32"),
        (body_of("photo", "BYTES", [1], ["aGk="]), "body.inputs.0.name: Input should be 'pixels' or 'image'"),
        (body_of("image", "BYTES", [1], ["aGk="], parameters={"engine": "rate"}), "body.parameters.engine"),
        (body_of("image", "BYTES", [1], ["aGk="], model_name="other"), "model_name 'other' is not the URL's"),
        (
            body_of("image", "BYTES", [1], ["aGk="], model_version="9"),
            "model_version '9' is not the URL's '1'",
        ),
        (body_of("image", "BYTES", [1], ["aGk="], parameters={"compare": "yes"}), "parameters.compare"),
        (body_of("image", "BYTES", [1.0], ["aGk="]), "body.inputs.0.shape.0: Input should be a valid int"),
        (body_of("image", "BYTES", [1], ["aGk="], extra=1), "body.extra: Extra inputs are not permitted"),
        ({"inputs": []}, "body.inputs: List should have at least 1 item"),
        ([1, 2], "body: Input should be a valid dictionary"),
    ],
)
async def test_400_names_the_problem(client: httpx.AsyncClient, body: Any, words: str) -> None:
    check(await client.post("/v2/models/tiny/infer", json=body), 400, words)


@pytest.mark.anyio
async def test_nested_data_nan_and_infinity(client: httpx.AsyncClient) -> None:
    nested = np.full((2, 3, 32, 32), 0.25).tolist()
    body = body_of("pixels", "FP32", [2, 3, 32, 32], nested)
    response = await client.post("/v2/models/tiny/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [2, 10]
    for special in (b"NaN", b"Infinity"):
        data = b"[" + b"0.5, " * 3071 + special + b"]"
        content = b'{"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": %s}]}'
        response = await client.post("/v2/models/tiny/infer", content=content % data)
        check(response, 400, f"element 3071 is {special.decode().lower()[:3]}")


@pytest.mark.anyio
async def test_404_415_and_unknown_routes(client: httpx.AsyncClient) -> None:
    check(await client.get("/v2/models/tiny/versions/7"), 404, "no version '7'; it serves 1")
    check(await client.get("/v2/models/nope/versions/1/ready"), 404, "'nope' is not loaded")
    body = body_of("image", "BYTES", [1], ["aGk="])
    check(await client.post("/v2/models/tiny/versions/7/infer", json=body), 404, "no version '7'")
    text = await client.post("/v2/models/tiny/infer", content=b"{}", headers={"content-type": "text/plain"})
    check(text, 415, "text/plain is not supported")
    check(await client.get("/v2/models/tiny/infer"), 405, "Method Not Allowed")
    assert (await client.get("/v2/models/tiny/versions/1")).json()["versions"] == ["1"]


@pytest.mark.anyio
async def test_401_413_and_503_in_the_protocol_shape(model_dir: Path, tmp_path: Path) -> None:
    pixels = body_of("pixels", "FP32", [3, 3, 32, 32], PIXELS * 3)
    settings = settings_for(model_dir, api_key="k", max_batch_files=2, max_upload_bytes=64 * 1024)
    async with serve(settings) as client:
        check(await client.get("/v2/models/tiny"), 401, "an API key is required")
        key = {"X-API-Key": "k"}
        response = await client.post("/v2/models/tiny/infer", json=pixels, headers=key)
        check(response, 413, "at most 2 per request")
        big = {**pixels, "id": "x" * 70_000}
        check(await client.post("/v2/models/tiny/infer", json=big, headers=key), 413, "over the limit")
        assert (await client.get("/v2/health/ready")).status_code == 200  # open, like /readyz
    async with serve(settings_for(tmp_path)) as client:
        check(await client.get("/v2/health/ready"), 503, "no model could be loaded")  # no path on open routes
        check(await client.post("/v2/models/tiny/infer", json=pixels), 503, "no model could be loaded")


@pytest.mark.anyio
async def test_kserve_bodies_are_accepted_and_unknown_parameters_ignored(client: httpx.AsyncClient) -> None:
    """KServe's InferenceRESTClient's JSON (InferRequest.to_rest, orjson, no Content-Type): id, model_name,
    parameters at every level; model_version as other clients may send it."""
    body = {
        "id": "r-1",
        "model_name": "tiny",
        "model_version": "1",
        "inputs": [
            {
                "name": "pixels",
                "shape": [1, 3, 32, 32],
                "datatype": "FP32",
                "parameters": {"content_type": "np"},
            }
            | {"data": PIXELS}
        ],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 0}}],
        "parameters": {"compare": False, "top_k": 3, "priority": 1},  # unknown keys: ignored
    }
    content = json.dumps(body, separators=(",", ":")).encode()
    response = await client.post("/v2/models/tiny/infer", content=content)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "r-1" and answer["model_name"] == "tiny" and answer["model_version"] == "1"
    assert [o["name"] for o in answer["outputs"]] == ["probabilities"]
    assert response.headers["content-type"] == "application/json"
    body["inputs"][0]["parameters"] = None  # null parameters: as if absent
    assert (await client.post("/v2/models/tiny/infer", json=body)).status_code == 200
