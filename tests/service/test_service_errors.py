"""Every error status the API promises, as ``{"error", "detail"}`` JSON (/v2: ``{"error"}``), no trace."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from servicetools import encode, picture, serve, settings_for

from service import workers

pytestmark = pytest.mark.anyio


def check(response: httpx.Response, status: int, error: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == error
    assert "Traceback" not in response.text
    return body


def upload(data: bytes, content_type: str = "image/png") -> dict:
    return {"file": ("upload", data, content_type)}


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, b"GIF89a", b"plain text"])
async def test_400_undecodable_image(client: httpx.AsyncClient, data: bytes) -> None:
    check(await client.post("/classify", files=upload(data)), 400, "invalid_image")


async def test_400_names_the_bad_file_of_a_batch(client: httpx.AsyncClient, png: bytes) -> None:
    files = [("files", ("good.png", png)), ("files", ("bad.png", b"\x89PNG\r\n\x1a\nbroken"))]
    body = check(await client.post("/classify/batch", files=files), 400, "invalid_image")
    assert body["detail"].startswith("bad.png")


@pytest.mark.parametrize("content_type", ["text/plain", "application/pdf", "image/tiff"])
async def test_415_unsupported_type(client: httpx.AsyncClient, content_type: str) -> None:
    check(
        await client.post("/classify", files=upload(b"%PDF-1.7 ...", content_type)),
        415,
        "unsupported_media_type",
    )


@pytest.mark.parametrize(
    "query",
    [
        "top_k=0",
        "top_k=1001",
        "top_k=two",
        "engine=warp",
        "engine=rate",
        "compare=maybe",
        "model=../../etc/passwd",
    ],
)
async def test_422_bad_parameters(client: httpx.AsyncClient, png: bytes, query: str) -> None:
    body = check(await client.post(f"/classify?{query}", files=upload(png)), 422, "invalid_parameters")
    assert body["detail"][0]["loc"][0] == "query"


async def test_422_missing_file_or_bad_form_field(client: httpx.AsyncClient, png: bytes) -> None:
    check(await client.post("/classify", data={"top_k": "1"}), 422, "invalid_parameters")
    check(await client.post("/classify"), 422, "invalid_parameters")
    check(await client.post("/classify/batch", data={"top_k": "1"}), 422, "invalid_parameters")
    body = check(
        await client.post("/classify", data={"top_k": "0"}, files=upload(png)), 422, "invalid_parameters"
    )
    assert body["detail"][0]["loc"] == ["body", "top_k"]


async def test_404_unknown_model(client: httpx.AsyncClient, png: bytes) -> None:
    body = check(await client.post("/classify?model=resnet999", files=upload(png)), 404, "model_not_found")
    assert "tiny" in body["detail"]
    check(await client.get("/models/resnet999"), 404, "model_not_found")
    v2 = await client.get("/v2/models/resnet999")  # the Open Inference Protocol's error shape
    assert v2.status_code == 404 and v2.json() == {"error": body["detail"]}


@pytest.mark.parametrize("path", ["/models/..%2F..%2Fetc%2Fpasswd", "/models/.hidden", "/models/%00"])
async def test_model_names_cannot_escape_the_model_directory(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code in (404, 422)


async def test_404_unknown_route_and_405_wrong_method(client: httpx.AsyncClient) -> None:
    check(await client.get("/nope"), 404, "not_found")
    check(await client.get("/classify"), 405, "method_not_allowed")


async def test_500_engine_failure_is_json_without_a_trace(
    client: httpx.AsyncClient, png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(workers, "run_batch", explode)  # the engines run in a thread in these tests
    body = check(await client.post("/classify", files=upload(png)), 500, "internal_error")
    assert "boom" not in body["detail"]
    monkeypatch.undo()
    assert (await client.post("/classify", files=upload(png))).status_code == 200


@pytest.fixture(scope="module")
async def small_limits(model_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(
        model_dir, max_upload_bytes=64 * 1024, max_batch_files=2, max_image_pixels=250_000
    )
    async with serve(settings) as client:
        yield client


async def test_413_upload_too_large(small_limits: httpx.AsyncClient) -> None:
    check(
        await small_limits.post("/classify", files=upload(b"\x89PNG" + b"\0" * 70_000)),
        413,
        "payload_too_large",
    )


async def test_413_is_enforced_while_streaming(small_limits: httpx.AsyncClient) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:  # no Content-Length: only counting the stream can stop it
        nonlocal sent
        yield b"--b\r\nContent-Disposition: form-data; name=file; filename=x.png\r\n\r\n"
        for _ in range(10_000):
            sent += 1
            yield b"\0" * 4096

    headers = {"content-type": "multipart/form-data; boundary=b"}
    check(await small_limits.post("/classify", content=endless(), headers=headers), 413, "payload_too_large")
    assert sent <= 17  # stopped just past 64 KiB, not after 40 MB


async def test_413_too_many_files(small_limits: httpx.AsyncClient, png: bytes) -> None:
    files = [("files", (f"{i}.png", png)) for i in range(3)]
    body = check(await small_limits.post("/classify/batch", files=files), 413, "payload_too_large")
    assert "at most 2" in body["detail"]


async def test_413_too_many_pixels(small_limits: httpx.AsyncClient) -> None:
    big = encode(picture("L", size=(600, 600)), "PNG")
    check(await small_limits.post("/classify", files=upload(big)), 413, "payload_too_large")


async def test_401_when_an_api_key_is_set(model_dir: Path, png: bytes) -> None:
    async with serve(settings_for(model_dir, api_key="s3cret")) as client:
        check(await client.post("/classify", files=upload(png)), 401, "unauthorized")
        response = await client.get("/models", headers={"Authorization": "Bearer wrong"})
        check(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        check(await client.get("/models", headers={"X-API-Key": "s3cre"}), 401, "unauthorized")
        assert (await client.get("/models", headers={"Authorization": "Bearer s3cret"})).status_code == 200
        ok = await client.post("/classify", files=upload(png), headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
        for open_path in ("/livez", "/readyz", "/v2/health/ready", "/metrics", "/docs"):
            assert (await client.get(open_path)).status_code == 200, open_path
        schemes = (await client.get("/openapi.json")).json()["components"]["securitySchemes"]
        assert set(schemes) == {"HTTPBearer", "APIKeyHeader"}
        metrics = (await client.get("/metrics")).text  # refused before routing, yet not counted as a 404 scan
        assert 'tsc_http_requests_total{method="POST",route="protected",status="401"} 1.0' in metrics


async def test_503_when_no_model_can_be_loaded(tmp_path: Path, png: bytes) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    (tmp_path / "junk.safetensors").write_bytes(b"\0" * 10)
    async with serve(settings_for(tmp_path)) as client:
        assert (await client.get("/livez")).status_code == 200
        body = check(await client.get("/readyz"), 503, "not_ready")
        # open routes give a generic reason: no path, file name or hash of the model directory
        assert body["detail"] == "no model could be loaded; the server log (and GET /models) say why"
        v2 = await client.get("/v2/health/ready")
        assert v2.status_code == 503 and v2.json() == {"error": body["detail"]}
        response = await client.post("/classify", files=upload(png))
        check(response, 503, "not_ready")
        assert response.headers["retry-after"] == "5"
        assert "broken" not in response.text and str(tmp_path) not in response.text
        models = (await client.get("/models")).json()  # authenticated when TSC_API_KEY is set
        assert set(models["failed"]) == {"broken", "junk"}
        assert str(tmp_path) in models["not_ready"] and "junk" in models["not_ready"]


async def test_503_when_the_model_dir_is_empty_or_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for model_dir in (tmp_path, tmp_path / "missing"):
        async with serve(settings_for(model_dir)) as client:
            body = check(await client.get("/readyz"), 503, "not_ready")
            assert str(tmp_path) not in body["detail"]
            assert str(model_dir) in (await client.get("/models")).json()["not_ready"]
            assert str(model_dir) in caplog.text  # the full reason is in the server log


async def test_503_when_the_queue_is_full(model_dir: Path, png: bytes) -> None:
    # compare=true queues the SNN and ANN runs on the interactive lane: a queue of one cannot take both.
    async with serve(settings_for(model_dir, max_queue_size=1, max_batch_files=1)) as client:
        response = await client.post("/classify?compare=true", files=upload(png))
        check(response, 503, "queue_full")
        assert response.headers["retry-after"] == "1"
        assert (await client.post("/classify", files=upload(png))).status_code == 200


async def test_not_ready_while_the_configured_default_model_failed_to_load(
    model_dir: Path, tmp_path: Path, png: bytes
) -> None:
    shutil.copytree(model_dir / "tiny", tmp_path / "tiny")
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "manifest.json").write_text("{not json")
    async with serve(settings_for(tmp_path, default_model="main")) as client:
        body = check(await client.get("/readyz"), 503, "not_ready")
        assert body["detail"].startswith("the configured default model is not loaded")
        check(await client.post("/classify", files=upload(png)), 503, "not_ready")  # not another model
        named = await client.post("/classify", params={"model": "tiny"}, files=upload(png))
        assert named.status_code == 200, named.text  # a request naming a loaded model is served
        assert (await client.get("/models/tiny")).status_code == 200
        assert (await client.get("/v2/models/tiny/ready")).status_code == 200
        listing = (await client.get("/models")).json()
        assert listing["default_model"] is None and not any(m["default"] for m in listing["models"])
        reason = (await client.get("/models")).json()["not_ready"]
        assert "TSC_DEFAULT_MODEL 'main' is not loaded" in reason
        assert "weights.safetensors is missing" in reason
        assert "tsc_model_load_failures_total 1.0" in (await client.get("/metrics")).text
    async with serve(settings_for(tmp_path, default_model="absent")) as client:
        check(await client.get("/readyz"), 503, "not_ready")
        assert "no checkpoint named 'absent'" in (await client.get("/models")).json()["not_ready"]


async def test_an_anonymous_body_is_refused_without_being_read(model_dir: Path) -> None:
    """With TSC_API_KEY set, a protected request without the key gets its 401 from the headers alone."""
    async with serve(settings_for(model_dir, api_key="s3cret")) as client:
        app = client._transport.app  # type: ignore[attr-defined]
        for path, shape in (("/classify", "error"), ("/v2/models/tiny/infer", "protocol")):
            received, sent = [], []

            async def receive(received: list = received) -> dict:
                received.append(1)
                return {"type": "http.request", "body": b"x" * 16_000_000, "more_body": False}

            async def send(message: dict, sent: list = sent) -> None:
                sent.append(message)

            headers = [(b"content-type", b"application/json"), (b"content-length", b"16000000")]
            scope = {
                "type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "root_path": "",
                "query_string": b"", "headers": headers, "client": ("127.0.0.1", 1), "server": ("t", 80),
                "scheme": "http", "http_version": "1.1", "asgi": {"version": "3.0"},
            }  # fmt: skip
            await app(scope, receive, send)
            assert sent[0]["status"] == 401 and received == [], path  # answered, nothing received
            body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
            assert ("error" in body and "detail" in body) if shape == "error" else list(body) == ["error"]
            assert (b"connection", b"close") in sent[0]["headers"]
