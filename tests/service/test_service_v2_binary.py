"""The binary tensor data extension in-process: KServe's client's binary requests byte for byte, binary
outputs equal to the JSON ones, each malformed binary request's 400 naming the problem, and the limits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from servicetools import encode, picture, serve, settings_for
from v2tools import (
    HEADER,
    PIXELS,
    b64,
    binary_input,
    binary_request,
    body_of,
    check,
    parse,
    pixels_of,
    serialized,
)

URL = "/v2/models/tiny/infer"
FP32 = np.full((1, 3, 32, 32), 0.5, dtype="<f4").tobytes()


def fp32_body(data: bytes, shape: list[int] | None = None, **parameters: object) -> dict:
    """A body whose ``pixels`` input is ``data`` after the JSON (its size in ``parameters``)."""
    tensor = binary_input("pixels", "FP32", shape or [1, 3, 32, 32], data)
    tensor["parameters"] |= parameters
    return {"inputs": [tensor]}


def framed(body: dict, data: bytes, length_change: int = 0) -> tuple[bytes, dict[str, str]]:
    """``body`` then ``data``, the header giving the JSON's length plus ``length_change``."""
    content, headers = binary_request(body, data)
    headers[HEADER] = str(int(headers[HEADER]) + length_change)
    return content, headers


def bytes_body(data: bytes, count: int) -> dict:
    """A body whose ``image`` input, ``count`` elements, is ``data`` after the JSON."""
    return {"inputs": [binary_input("image", "BYTES", [count], data)]}


PNG = encode(picture())
SHARED = {  # tritonclient's InferInput.set_shared_memory
    "name": "pixels",
    "shape": [1, 3, 32, 32],
    "datatype": "FP32",
    "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 12288},
}
TOO_LONG = b"\xe8\x03\0\0" + b"x" * 10  # says 1000 bytes
NAN_AT_5 = np.full(3072, 0.5, dtype="<f4")
NAN_AT_5[5] = np.nan
MALFORMED = {
    "header not a number": (*binary_request(fp32_body(FP32), FP32)[:1], {HEADER: "12a"}),
    "header zero": (*binary_request(fp32_body(FP32), FP32)[:1], {HEADER: "0"}),
    "header cuts the JSON": framed(fp32_body(FP32), FP32, -1),
    "sizes do not add up": framed(fp32_body(FP32), FP32[:-4]),
    "size not the shape's": binary_request(fp32_body(FP32[:-4]), FP32[:-4]),
    "bytes but no binary input": binary_request(body_of("pixels", "FP32", [1, 3, 32, 32], PIXELS), b"extra"),
    "data and size": binary_request({"inputs": [binary_input("pixels", "FP32", [1], b"") | {"data": [0]}]}),
    "size without the header": (json.dumps(fp32_body(FP32)).encode(), {}),
    "no data": (json.dumps({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1]}]}).encode(), {}),
    "negative size": binary_request(fp32_body(FP32, binary_data_size=-1), FP32),
    "shared memory": (json.dumps({"inputs": [SHARED]}).encode(), {}),
    "not FP32": binary_request({"inputs": [binary_input("pixels", "FP64", [1, 3, 32, 32], FP32)]}, FP32),
    "NaN pixel": binary_request(fp32_body(NAN_AT_5.tobytes()), NAN_AT_5.tobytes()),
    "pixel above 1": binary_request(fp32_body(FP32), b"\x00\x00\xc0\x3f" + FP32[4:]),
    "BYTES cut in a length": binary_request(
        bytes_body(serialized(PNG) + b"\1\0", 2), serialized(PNG) + b"\1\0"
    ),
    "BYTES element too long": binary_request(bytes_body(TOO_LONG, 1), TOO_LONG),
    "BYTES left over": binary_request(bytes_body(serialized(PNG) + b"abc", 1), serialized(PNG) + b"abc"),
    "BYTES not an image": binary_request(bytes_body(serialized(b"text"), 1), serialized(b"text")),
}
WORDS = {
    "header not a number": "Inference-Header-Content-Length must be the JSON's length in bytes",
    "header zero": "a whole number above 0, not '0'",
    "header cuts the JSON": "bytes (Inference-Header-Content-Length) are not valid JSON: ",
    "sizes do not add up": "binary_data_size add up to 12288 bytes, but 12284 bytes follow the JSON",
    "size not the shape's": "in FP32 needs 12288 bytes of binary data, binary_data_size is 12284",
    "bytes but no binary input": "add up to 0 bytes, but 5 bytes follow the JSON",
    "data and size": "input 'pixels' has both data and parameters.binary_data_size; send one",
    "size without the header": "binary_data_size 12288 but the request has no Inference-Header",
    "no data": "input 'pixels' has no data: send data, or parameters.binary_data_size",
    "negative size": "parameters.binary_data_size: Input should be greater than or equal to 0",
    "shared memory": "the shared memory extension is not supported",
    "not FP32": "input 'pixels' must be FP32, not FP64",
    "NaN pixel": "input 'pixels' element 5 is nan; pixels must be numbers in [0, 1]",
    "pixel above 1": "input 'pixels' element 0 is 1.5; pixels must be numbers in [0, 1]",
    "BYTES cut in a length": "input 'image''s binary data ends after 1 of its 2 elements",
    "BYTES element too long": "input 'image' element 0 says 1000 bytes, but 10 are left",
    "BYTES left over": "input 'image''s binary data has 3 bytes after its 1 elements",
    "BYTES not an image": "image[0]: ",
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_binary_requests_get_a_400_naming_the_problem(
    client: httpx.AsyncClient, case: str
) -> None:
    content, headers = MALFORMED[case]
    check(await client.post(URL, content=content, headers=headers), 400, WORDS[case])


@pytest.mark.anyio
async def test_header_beyond_the_body_and_media_types(client: httpx.AsyncClient) -> None:
    content, headers = framed(fp32_body(FP32), FP32, len(FP32) + 1)
    check(
        await client.post(URL, content=content, headers=headers), 400, f"is beyond the body's {len(content)}"
    )

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: known once read
        yield content

    response = await client.post(URL, content=chunked(), headers=headers)
    check(response, 400, f"{HEADER} {len(content) + 1} is beyond the body's {len(content)} bytes")
    text = {**headers, HEADER: str(len(content) - len(FP32)), "content-type": "text/plain"}
    check(await client.post(URL, content=content, headers=text), 415, "text/plain is not supported")
    plain = json.dumps(body_of("pixels", "FP32", [1, 3, 32, 32], PIXELS)).encode()
    octets = {"content-type": "application/octet-stream"}  # without the header: not binary data
    check(
        await client.post(URL, content=plain, headers=octets), 415, f"application/octet-stream with {HEADER}"
    )


@pytest.mark.anyio
async def test_kserve_binary_pixels_give_the_json_answer(client: httpx.AsyncClient) -> None:
    """KServe's InferRequest.to_rest with set_data_from_numpy (binary by default), outputs binary or not."""
    pixels = np.concatenate([pixels_of(PNG), pixels_of(encode(picture(size=(20, 70))))])
    shape = list(pixels.shape)
    want = await client.post(URL, json=body_of("pixels", "FP32", shape, pixels.ravel().tolist()))
    json_answer, json_arrays = parse(want)
    outputs = [
        {"name": "logits", "parameters": {"binary_data": True}},
        {"name": "spikes"},
        {"name": "energy_pj", "parameters": {"binary_data": True}},
    ]
    data = pixels.astype("<f4").tobytes()
    inputs = [binary_input("pixels", "FP32", shape, data)]
    body = {"id": "k-1", "model_name": "tiny", "inputs": inputs, "outputs": outputs}
    content, headers = binary_request(body, data)
    response = await client.post(URL, content=content, headers=headers)
    assert response.headers["content-type"] == "application/octet-stream"
    answer, arrays = parse(response)
    assert answer["id"] == "k-1" and [o["name"] for o in answer["outputs"]] == [
        "logits",
        "spikes",
        "energy_pj",
    ]
    assert answer["outputs"][1]["data"] == json_arrays["spikes"].tolist()  # JSON, as it did not ask
    assert answer["outputs"][0]["parameters"] == {"binary_data_size": 2 * 10 * 4}
    for name in ("logits", "energy_pj"):
        np.testing.assert_array_equal(arrays[name], json_arrays[name].astype(np.float32), err_msg=name)
    assert len(response.content) == int(response.headers[HEADER]) + 2 * 10 * 4 + 2 * 4
    assert json_answer["outputs"][0]["name"] == "logits" and HEADER not in want.headers


@pytest.mark.anyio
async def test_binary_images_with_every_output_binary_give_the_json_answer(client: httpx.AsyncClient) -> None:
    images = PNG, encode(picture(size=(64, 80)), "JPEG")
    want = parse(await client.post(URL, json=body_of("image", "BYTES", [2], [b64(i) for i in images])))[1]
    body = bytes_body(serialized(*images), 2) | {
        "parameters": {"binary_data_output": True, "engine": "stepped"}
    }
    content, headers = binary_request(body, serialized(*images))
    del headers["content-type"]  # tritonclient sends none
    answer, arrays = parse(await client.post(URL, content=content, headers=headers))
    assert list(arrays) == list(want) and all("data" not in o for o in answer["outputs"])
    for name, values in arrays.items():
        assert values.dtype == want[name].dtype and values.shape == want[name].shape, name
        np.testing.assert_allclose(values, want[name].astype(values.dtype), rtol=1e-6, err_msg=name)


@pytest.mark.anyio
async def test_binary_requests_have_the_json_limits(model_dir: Path) -> None:
    settings = settings_for(model_dir, max_batch_files=2, max_upload_bytes=64 * 1024)
    async with serve(settings) as client:
        three = np.full((3, 3, 32, 32), 0.5, dtype="<f4").tobytes()
        content, headers = binary_request(fp32_body(three, [3, 3, 32, 32]), three)
        check(await client.post(URL, content=content, headers=headers), 413, "at most 2 per request")
        header = json.dumps(fp32_body(b"\0" * 10**6)).encode()

        async def body() -> AsyncIterator[bytes]:
            yield header
            raise AssertionError("the body was read although its Content-Length is over the limit")

        declared = {HEADER: str(len(header)), "content-length": str(len(header) + 10**6)}
        check(await client.post(URL, content=body(), headers=declared), 413, "over the limit of 65536 bytes")

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            yield header
            for _ in range(100):
                yield b"\0" * 10_000

        check(
            await client.post(URL, content=chunks(), headers={HEADER: str(len(header))}),
            413,
            "over the limit",
        )


@pytest.mark.anyio
async def test_openapi_documents_the_binary_extension(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        operation = paths[path]["post"]
        assert HEADER in {p["name"] for p in operation["parameters"] if p["in"] == "header"}, path
        assert set(operation["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
        ok = operation["responses"]["200"]
        assert (
            set(ok["content"]) == {"application/json", "application/octet-stream"} and HEADER in ok["headers"]
        )
        assert (
            "binary_data_size" in operation["description"]
            and "binary_data_output" in operation["description"]
        )
