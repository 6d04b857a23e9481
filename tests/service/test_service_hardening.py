"""Hardening: decode budget, header and body limits, connection cap, cancellation, fairness, shutdown."""

from __future__ import annotations

import asyncio
import json
import math
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi import FastAPI
from PIL import Image
from servicetools import REPO, Server, encode, picture, settings_for, start_service

from converter import InputSpec, load
from service import dataplane as dataplane_module
from service import images, workers
from service.app import create_app
from service.batching import Batcher
from service.dataplane import DataPlane
from service.execute import run_batch
from service.settings import Settings

pytestmark = pytest.mark.anyio
SPEC = InputSpec(channels=3, height=32, width=32)


def flat_png(width: int, height: int) -> bytes:
    """A single-colour PNG: a few kilobytes to send, ``3 * width * height`` bytes to decode."""
    return encode(Image.new("RGB", (width, height), (200, 40, 40)))


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Poll ``condition`` until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Poll ``condition`` on the event loop until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


# --- decoding within a budget


async def test_a_png_too_large_to_decode_in_full_is_refused_from_its_header(
    client: httpx.AsyncClient,
) -> None:
    files = {"file": ("flat.png", flat_png(3000, 3000), "image/png")}  # 9 MP: over the 8 MP floor
    response = await client.post("/classify", files=files)
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"
    assert (
        "flat.png: the PNG image is 3000x3000 pixels; PNG is decoded at full size"
        in response.json()["detail"]
    )


async def test_a_large_jpeg_is_reduced_while_it_decodes_and_accepted(client: httpx.AsyncClient) -> None:
    files = {"file": ("big.jpg", encode(picture(size=(4000, 3000)), "JPEG"), "image/jpeg")}
    assert (await client.post("/classify", files=files)).status_code == 200


def test_the_full_decode_limit_follows_the_model_input() -> None:
    settings = Settings()
    assert settings.full_decode_pixels(32, 32) == 8_000_000  # the floor, for a CIFAR-sized input
    assert settings.full_decode_pixels(224, 224) == 40_000_000  # 32 x 224 per side, capped by the pixel limit
    small = Settings(max_full_decode_pixels=1000, full_decode_scale=4)
    assert small.full_decode_pixels(32, 32) == 128 * 128


async def test_stopping_abandons_a_batch_that_outlives_the_wait(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(dataplane_module, "STOP_WAIT_S", 0.3)
    dataplane = DataPlane(
        Settings(
            model_dir=tmp_path,
        )
    )
    await dataplane.start()
    release = threading.Event()
    lane = next(iter(dataplane._lanes.values()))
    running = lane.submit(release.wait, 30)  # a batch torch cannot be asked to stop

    async def never_drains() -> None:
        await asyncio.sleep(30)

    monkeypatch.setattr(dataplane.store, "close", never_drains)
    started = time.monotonic()
    try:
        await dataplane.stop()
        assert time.monotonic() - started < 2 and not running.done()
    finally:
        release.set()


def test_the_server_process_exits_past_a_batch_still_running() -> None:
    code = (
        "import threading, time\n"
        "from service.__main__ import _exit_past_running_batches\n"
        "threading.Thread(target=time.sleep, args=(60,), name='tsc-reference_0').start()\n"
        "_exit_past_running_batches(0.2)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 40  # not the 60 s the thread would take (imports can take 15 s)


async def test_a_run_of_large_decodes_hands_its_memory_back_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if platform.libc_ver()[0] == "glibc":
        assert images.MALLOC_TRIM is not None
    trims: list[int] = []
    monkeypatch.setattr(images, "MALLOC_TRIM", trims.append)
    dataplane = DataPlane(
        Settings(
            model_dir=tmp_path,
            max_large_decodes=1,
        )
    )
    await dataplane.start()
    try:
        await dataplane.decode(flat_png(64, 64), None, SPEC, "small")
        assert trims == []
        large = flat_png(1200, 1000)
        await asyncio.gather(*(dataplane.decode(large, None, SPEC, f"large-{i}") for i in range(3)))
        await eventually(lambda: trims == [0], "the memory was not handed back")
    finally:
        await dataplane.stop()
    assert trims == [0]  # once, after the last of the three


async def test_large_decodes_take_turns_and_small_ones_pass_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    running, most, finished = 0, 0, []
    lock = threading.Lock()

    def slow_decode(image: Image.Image, channels: int, height: int, width: int) -> torch.Tensor:
        nonlocal running, most
        large = images.is_large(image)
        with lock:
            running += large
            most = max(most, running)
        time.sleep(0.3 if large else 0)
        with lock:
            running -= large
            finished.append("large" if large else "small")
        return torch.zeros(channels, height, width)

    monkeypatch.setattr("service.dataplane.decode_pixels", slow_decode)
    dataplane = DataPlane(
        Settings(
            model_dir=tmp_path,
            max_large_decodes=1,
        )
    )
    await dataplane.start()
    try:
        large, small = flat_png(1200, 1000), flat_png(64, 64)
        decodes = [dataplane.decode(large, None, SPEC, f"large-{i}") for i in range(3)]
        await asyncio.gather(*decodes, dataplane.decode(small, None, SPEC, "small"))
    finally:
        await dataplane.stop()
    assert most == 1  # one large decode at a time
    assert finished.index("small") < 2  # the small one did not wait for the large ones


# --- cancellation and fairness, in-process with the interactive engine held


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, list[tuple[str, int]]]]:
    """Every batch the models run is recorded, then waits for the event (set at the end of the test)."""
    gate, batches = threading.Event(), []

    def run_held(net: Any, batch: torch.Tensor, engine: str, raster: bool, rate_steps: int) -> list:
        batches.append((engine, len(batch)))
        gate.wait(30)
        return run_batch(net, batch, engine, raster, rate_steps)

    monkeypatch.setattr(workers, "run_batch", run_held)  # settings_for runs the engines in threads
    yield gate, batches
    gate.set()


@asynccontextmanager
async def app_serving(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with its lifespan running and its models loaded."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.dataplane.wait_loaded()
        yield app


def client_from(app: FastAPI, address: str) -> httpx.AsyncClient:
    """An in-process client whose requests come from ``address``."""
    transport = httpx.ASGITransport(app, raise_app_exceptions=False, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30)


def lane(app: FastAPI) -> Batcher:
    """The interactive batcher of the model ``tiny``."""
    return app.state.dataplane.store.models["tiny"].batchers["interactive"]


async def test_a_client_that_disconnects_takes_its_images_off_the_queue(
    model_dir: Path, held: tuple[threading.Event, list], png: bytes
) -> None:
    gate, batches = held
    async with app_serving(settings_for(model_dir)) as app, client_from(app, "10.0.0.1") as client:
        first = asyncio.ensure_future(client.post("/classify", files={"file": ("a.png", png)}))
        await eventually(lambda: batches == [("fast", 1)], "the first request never ran")
        # the second, sent by hand: its body, then a disconnect once it is queued behind the first
        request = client.build_request("POST", "/classify/batch", files=[("files", ("b.png", png))] * 4)
        body, gone, sent = request.read(), asyncio.Event(), []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if messages:
                return messages.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/classify/batch",
            "raw_path": b"/classify/batch",
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in request.headers.items()],
            "client": ("10.0.0.2", 40000),
            "server": ("test", 80),
        }
        answer = asyncio.ensure_future(app(scope, receive, send))
        await eventually(lambda: lane(app).waiting == 4, "the second request was never queued")
        gone.set()
        await asyncio.wait_for(answer, 10)
        assert sent[0]["status"] == 499  # logged and counted; the client is not there to read it
        assert lane(app).waiting == 0  # nothing of it is left in the queue
        gate.set()
        assert (await first).status_code == 200
    assert batches == [("fast", 1)]  # its four images never ran


async def test_one_client_cannot_fill_the_queue_for_the_others(
    model_dir: Path, held: tuple[threading.Event, list], png: bytes
) -> None:
    gate, batches = held
    settings = settings_for(model_dir, max_queue_size=8, max_client_queue_share=0.5, max_batch_files=4)
    async with (
        app_serving(settings) as app,
        client_from(app, "10.0.0.1") as greedy,
        client_from(app, "10.0.0.2") as polite,
    ):
        one = {"file": ("a.png", png)}
        first = asyncio.ensure_future(greedy.post("/classify", files=one))
        await eventually(lambda: batches == [("fast", 1)], "the first request never ran")
        four = asyncio.ensure_future(greedy.post("/classify/batch", files=[("files", ("b.png", png))] * 4))
        await eventually(lambda: lane(app).waiting == 4, "the greedy batch was never queued")
        refused = await greedy.post("/classify", files=one)
        assert refused.status_code == 503 and refused.json()["error"] == "queue_full"
        assert "of this client already wait" in refused.json()["detail"]
        served = asyncio.ensure_future(polite.post("/classify", files=one))  # the queue still has room
        await eventually(lambda: lane(app).waiting == 5, "the polite request was never queued")
        gate.set()
        assert [r.status_code for r in await asyncio.gather(first, four, served)] == [200, 200, 200]


# --- the upload form and echoed names


async def test_two_file_parts_are_a_400_naming_the_problem(client: httpx.AsyncClient, png: bytes) -> None:
    files = [("file", ("a.png", png, "image/png")), ("file", ("b.png", png, "image/png"))]
    response = await client.post("/classify", files=files)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "detail": "2 'file' parts sent; send one (POST /classify/batch takes several)",
    }


def multipart(filename: bytes, data: bytes) -> tuple[dict[str, str], bytes]:
    """A one-part form whose filename is exactly ``filename`` (httpx would escape it)."""
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n\r\n'
    return {"Content-Type": "multipart/form-data; boundary=b"}, head + data + b"\r\n--b--\r\n"


async def test_filenames_are_echoed_without_control_or_bidi_characters(
    client: httpx.AsyncClient, png: bytes
) -> None:
    name = "cat\u202egnp.exe\u2066\x00\x1b[31m\x85.png".encode()
    headers, body = multipart(name, png)
    response = await client.post("/classify", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["filename"] == "catgnp.exe[31m.png"
    headers, body = multipart(name, b"not an image")
    response = await client.post("/classify", content=body, headers=headers)
    assert response.json()["detail"].startswith("catgnp.exe[31m.png: ")


async def test_a_stalled_body_is_a_408(model_dir: Path) -> None:
    async def stalling() -> AsyncIterator[bytes]:
        yield b"--b\r\nContent-Disposition: form-data; name=file; filename=x.png\r\n\r\n"
        await asyncio.sleep(5)
        yield b"never"

    async with (
        app_serving(settings_for(model_dir, body_timeout_s=0.2)) as app,
        client_from(app, "1.2.3.4") as c,
    ):
        headers = {"Content-Type": "multipart/form-data; boundary=b"}
        response = await c.post("/classify", content=stalling(), headers=headers)
    assert response.status_code == 408
    assert response.json()["error"] == "request_timeout"
    assert response.headers["connection"] == "close"


async def test_a_trickling_body_is_cut_off_at_its_deadline(model_dir: Path) -> None:
    """A byte every 0.1 s never pauses past the timeout, but falls behind the minimum rate."""
    head, sent = b"--b\r\nContent-Disposition: form-data; name=file; filename=x.png\r\n\r\n", 0

    async def trickle() -> AsyncIterator[bytes]:
        nonlocal sent
        yield head
        for _ in range(100):
            sent += 1
            yield b"a"
            await asyncio.sleep(0.1)

    settings = settings_for(model_dir, body_timeout_s=0.5, body_min_rate=100)
    async with app_serving(settings) as app, client_from(app, "1.2.3.4") as c:
        headers = {"Content-Type": "multipart/form-data; boundary=b", "Content-Length": str(len(head) + 100)}
        started = time.monotonic()
        response = await c.post("/classify", content=trickle(), headers=headers)
    assert response.status_code == 408 and response.headers["connection"] == "close"
    assert "TSC_BODY_MIN_RATE" in response.json()["detail"]
    elapsed = time.monotonic() - started  # 0.5 s + the body's length at 100 bytes/s: about 2.2 s
    assert 1.5 < elapsed < 4 and sent < 40


async def test_bodies_beyond_the_memory_budget_get_a_503_and_their_bytes_are_released(
    model_dir: Path, png: bytes
) -> None:
    release = asyncio.Event()

    async def held() -> AsyncIterator[bytes]:
        yield b"--b\r\n"
        await release.wait()

    budget = 6000
    async with (
        app_serving(settings_for(model_dir, body_budget_bytes=budget)) as app,
        client_from(app, "1.2.3.4") as c,
    ):
        headers = {"Content-Type": "multipart/form-data; boundary=b", "Content-Length": str(budget - 100)}
        holder = asyncio.create_task(c.post("/classify", content=held(), headers=headers))
        await asyncio.sleep(0.2)
        refused = await c.post("/classify", files={"file": ("a.png", png)})  # does not fit beside it
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "overloaded" and refused.headers["connection"] == "close"
        assert "TSC_BODY_BUDGET_BYTES" in refused.json()["detail"]
        release.set()
        await holder
        ok = await c.post("/classify", files={"file": ("a.png", png)})  # the held bytes were given back
        assert ok.status_code == 200, ok.text


async def test_one_address_holds_at_most_its_share_of_the_body_budget(model_dir: Path, png: bytes) -> None:
    """A client stalling bodies cannot take the budget from everyone: its address has a share of it."""
    release = asyncio.Event()

    async def held() -> AsyncIterator[bytes]:
        yield b"--b\r\n"
        await release.wait()

    # 2 of 8 connections per address: a quarter of the 40,000-byte budget, at least one 9,800-byte body
    limits = {"limit_concurrency": 8, "max_client_connections": 2, "max_upload_bytes": 9800}
    settings = settings_for(model_dir, body_budget_bytes=40_000, **limits)
    assert settings.client_body_budget == 10_000
    async with (
        app_serving(settings) as app,
        client_from(app, "1.2.3.4") as greedy,
        client_from(app, "5.6.7.8") as other,
    ):
        headers = {"Content-Type": "multipart/form-data; boundary=b", "Content-Length": "9800"}
        holder = asyncio.create_task(greedy.post("/classify", content=held(), headers=headers))
        await asyncio.sleep(0.2)
        refused = await greedy.post("/classify", files={"file": ("a.png", png)})  # over its address's share
        assert refused.status_code == 503 and refused.headers["connection"] == "close", refused.text
        assert "this address holds" in refused.json()["detail"]
        assert (await other.post("/classify", files={"file": ("a.png", png)})).status_code == 200
        release.set()
        await holder
        again = await greedy.post("/classify", files={"file": ("a.png", png)})  # its share was given back
        assert again.status_code == 200, again.text


def test_the_address_share_of_the_body_budget_follows_the_connection_cap() -> None:
    budget = {"body_budget_bytes": 512 * 2**20, "limit_concurrency": 1024}
    assert Settings(**budget).client_body_budget == 128 * 2**20  # the default cap: a quarter
    assert Settings(**budget, max_client_connections=1).client_body_budget == 16 * 2**20  # one largest body
    assert Settings(**budget, max_client_connections=0).client_body_budget is None  # no cap, no share


# --- configuration


@pytest.mark.parametrize("key", ["s\u00e9same", " s3same", "s3same\n", "   ", "s3\x00same"])
def test_an_api_key_no_header_can_carry_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="TSC_API_KEY must be printable ASCII") as refused:
        Settings(api_key=key)
    assert "same" not in str(refused.value)  # the key is not echoed


def test_the_server_refuses_to_start_with_such_a_key() -> None:
    env = {"TSC_API_KEY": "s\u00e9same", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "service"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "invalid configuration: TSC_API_KEY: " in done.stderr
    assert "Traceback" not in done.stderr and "s\u00e9same" not in done.stderr


# --- over the wire: uvicorn with the service's connection guards


def address(server: Server) -> tuple[str, int]:
    """The server's host and port."""
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    return raw


def exchange(server: Server, data: bytes, timeout: float = 10) -> tuple[int, dict[str, str], Any]:
    """Send raw bytes on a new connection and read until the server closes it: status, headers, JSON."""
    with socket.create_connection(address(server), timeout=timeout) as sock:
        sock.sendall(data)
        return parse(read_all(sock))


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body of a raw response ((0, {}, None) for none)."""
    if not raw:
        return 0, {}, None
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


@pytest.fixture(scope="module")
def wire(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``python -m service`` with short header and body timeouts and a cap of 8 connections."""
    log = tmp_path_factory.mktemp("wire") / "server.log"
    timeouts = {"TSC_HEADER_TIMEOUT_S": "1", "TSC_BODY_TIMEOUT_S": "1"}
    server = start_service(
        model_dir, log, TSC_LIMIT_CONCURRENCY="8", TSC_MAX_CLIENT_CONNECTIONS="0", **timeouts
    )
    yield server
    server.stop()
    assert "Traceback" not in server.log.read_text()


GET = b"GET /readyz HTTP/1.1\r\nHost: test\r\n"


def test_malformed_requests_get_a_json_400(wire: Server) -> None:
    for request in (b"GARBAGE\r\n\r\n", GET + b"Bad Header\r\n\r\n"):
        status, headers, body = exchange(wire, request)
        assert (status, body["error"]) == (400, "bad_request")
        assert headers["content-type"] == "application/json"
    _, _, body = exchange(wire, b"GET /v2/health/ready HTTP/1.1\r\nHost: test\r\nBad Header\r\n\r\n")
    assert set(body) == {"error"}  # the Open Inference Protocol's shape under /v2


def test_huge_or_countless_headers_get_a_431(wire: Server) -> None:
    started = time.monotonic()
    status, _, body = exchange(wire, GET + b"X-Big: " + b"a" * 8 * 2**20 + b"\r\n\r\n")
    assert (status, body["error"]) == (431, "request_header_fields_too_large")
    assert "16384 bytes (TSC_MAX_HEADER_BYTES)" in body["detail"]
    assert time.monotonic() - started < 3
    many = GET + b"".join(b"X-%d: y\r\n" % i for i in range(20_000)) + b"\r\n"
    status, _, body = exchange(wire, many)
    assert (status, body["detail"]) == (431, "more than 100 request headers (TSC_MAX_HEADERS)")


def test_slow_headers_get_a_408_and_silent_connections_are_closed(wire: Server) -> None:
    started = time.monotonic()
    status, _, body = exchange(wire, GET)  # the blank line that ends the headers never comes
    assert (status, body["error"]) == (408, "request_timeout")
    assert 0.9 < time.monotonic() - started < 5
    assert exchange(wire, b"") == (0, {}, None)


def test_bodies_that_stall_get_a_408(wire: Server) -> None:
    form = b"POST /classify HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    for request in (
        form + b"Content-Length: 1000\r\n\r\n--b\r\n",  # a Content-Length larger than the body
        form + b"Transfer-Encoding: chunked\r\n\r\n5\r\n--b\r\n\r\n",  # chunks that never end
    ):
        status, headers, body = exchange(wire, request)
        assert (status, body["error"]) == (408, "request_timeout")
        assert "TSC_BODY_TIMEOUT_S" in body["detail"] and headers["connection"] == "close"


def test_connections_over_the_limit_are_refused_at_once_and_logged(wire: Server) -> None:
    silent = [socket.create_connection(address(wire)) for _ in range(8)]
    try:
        time.sleep(0.2)
        with socket.create_connection(address(wire), timeout=0.7) as ninth:  # before the silent ones time out
            status, _, body = parse(read_all(ninth))  # answered as it arrives, before it sends anything
        assert (status, body["error"]) == (503, "overloaded")
    finally:
        for sock in silent:
            sock.close()
    wait_until(lambda: httpx.get(f"{wire.url}/readyz").status_code == 200, "never served again")
    assert "503 overloaded: over 8 open connections" in wire.log.read_text()


def test_one_address_cannot_take_every_connection(model_dir: Path, tmp_path: Path) -> None:
    server = start_service(
        model_dir, tmp_path / "server.log", TSC_LIMIT_CONCURRENCY="8", TSC_MAX_CLIENT_CONNECTIONS="2"
    )
    host, port = address(server)
    try:
        hoarded = [socket.create_connection((host, port)) for _ in range(2)]
        try:
            time.sleep(0.2)
            with socket.create_connection((host, port), timeout=5) as third:
                status, headers, body = parse(read_all(third))
            assert (status, body["error"]) == (503, "overloaded") and headers["connection"] == "close"
            assert "TSC_MAX_CLIENT_CONNECTIONS" in body["detail"]
            other = socket.create_connection((host, port), timeout=5, source_address=("127.0.0.2", 0))
            with other:  # another address is still served
                other.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                assert parse(read_all(other))[0] == 200
        finally:
            for sock in hoarded:
                sock.close()
        assert "over 2 connections from 127.0.0.1" in server.log.read_text()
    finally:
        server.stop()


# --- shutdown


def rate_steps_lasting(net_dir: Path, images: int, seconds: float) -> int:
    """Rate-coded steps that keep ``images`` images of ``net_dir`` busy at least ``seconds`` on this machine.

    Timed on one torch thread, as the server under test runs its lanes (TSC_TORCH_THREADS=1): the fastest
    of three samples of at least 0.3 s each, so a stall while sampling cannot shorten the workload.
    """
    net = load(net_dir)
    pixels = torch.rand(images, net.input_spec.channels, net.input_spec.height, net.input_spec.width)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        steps, per_step = 100, []
        run_batch(net, pixels, "rate", False, rate_steps=steps)  # warm-up
        while len(per_step) < 3:
            start = time.perf_counter()
            run_batch(net, pixels, "rate", False, rate_steps=steps)
            elapsed = time.perf_counter() - start
            if elapsed < 0.3:
                steps *= 2
                continue
            per_step.append(elapsed / steps)
    finally:
        torch.set_num_threads(threads)
    return math.ceil(seconds / min(per_step))


def test_requests_cut_off_at_shutdown_get_a_json_503(model_dir: Path, tmp_path: Path, png: bytes) -> None:
    # each compare batch of 8 keeps the reference lane busy ~5 s on any machine: both outlast the 1 s grace
    steps = rate_steps_lasting(model_dir / "tiny", 8, 5.0)
    server = start_service(
        model_dir,
        tmp_path / "server.log",
        TSC_GRACEFUL_TIMEOUT_S="1",
        TSC_RATE_STEPS=str(steps),
        TSC_TORCH_THREADS="1",
    )
    port = int(server.url.rsplit(":", 1)[1])
    answers: dict[str, httpx.Response] = {}
    files = [("files", (f"{i}.png", png, "image/png")) for i in range(8)]

    def compare(name: str) -> None:
        url = f"{server.url}/classify/batch?compare=true"
        answers[name] = httpx.post(url, files=files, timeout=60)

    threads = [threading.Thread(target=compare, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as stalled:
            form = b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100\r\n\r\n--"
            stalled.sendall(b"POST /classify HTTP/1.1\r\nHost: t\r\n" + form)  # the rest never comes
            metrics = f"{server.url}/metrics"
            in_flight = "tsc_http_requests_in_flight 4.0"
            wait_until(lambda: in_flight in httpx.get(metrics).text, "never all in flight")
            time.sleep(0.5)  # the compare batches are queued or running
            server.process.send_signal(signal.SIGTERM)
            raw = read_all(stalled)
        for thread in threads:
            thread.join(timeout=60)
        assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if server.process.poll() is None:
            server.process.kill()
    assert raw.startswith(b"HTTP/1.1 503 ")
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["error"] == "not_ready"
    for name in ("a", "b"):
        assert answers[name].status_code == 503, f"{steps} rate steps: {answers[name].text[:200]}"
        assert answers[name].json()["error"] == "not_ready"
    log = server.log.read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log
    assert log.count("cut off: the shutdown grace period ended") == 3
