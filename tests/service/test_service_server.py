"""The real thing: the container's command starts uvicorn in a subprocess, serving a real checkpoint."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servicetools import REPO, Server, encode, picture, start, start_service

from benchmarks.harness import free_port


def container_command() -> list[str]:
    """The exec-form CMD of docker/Dockerfile."""
    cmd = [
        line for line in (REPO / "docker" / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")
    ]
    assert len(cmd) == 1, "one exec-form CMD expected"
    return json.loads(cmd[0].removeprefix("CMD "))


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The container's CMD, run as is (python is this interpreter), configured only by TSC_* variables."""
    argv = container_command()
    assert argv[:3] == ["python", "-m", "service"]
    port = free_port()
    env = {
        "TSC_HOST": "127.0.0.1",
        "TSC_PORT": str(port),
        "TSC_MODEL_DIR": str(model_dir),
        "TSC_RATE_STEPS": "8",
    }
    server = start([sys.executable, *argv[1:]], env, tmp_path_factory.mktemp("log") / "server.log", port)
    yield server
    if server.process.poll() is None:
        server.stop()


def test_round_trip_with_a_real_checkpoint(server: Server) -> None:
    files = {"file": ("photo.jpg", encode(picture(size=(640, 480)), "JPEG"), "image/jpeg")}
    response = httpx.post(f"{server.url}/classify", params={"compare": "true"}, files=files, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["name"] == "tiny"  # TSC_DEFAULT_MODEL's resnet20-cifar10 is absent: first loaded
    assert body["spikes"]["total"] > 0 and body["operations"]["energy"]["snn_pj"] > 0
    assert body["comparison"]["rate"]["timesteps"] == 8
    assert "server" not in response.headers
    batch = httpx.post(f"{server.url}/classify/batch", files=[("files", ("a.png", encode(picture())))] * 3)
    assert len(batch.json()["results"]) == 3


def test_errors_over_the_wire(server: Server) -> None:
    bad = httpx.post(f"{server.url}/classify", files={"file": ("x.png", b"\x89PNG\r\n\x1a\n...")})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_image"
    missing = httpx.get(f"{server.url}/models/none")
    assert missing.status_code == 404 and missing.json()["error"] == "model_not_found"


def test_metrics_and_docs_over_the_wire(server: Server) -> None:
    files = {"file": ("a.png", encode(picture()), "image/png")}
    assert httpx.post(f"{server.url}/classify", files=files, timeout=60).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'tsc_spikes_per_image_count{engine="fast",model="tiny"}' in metrics
    assert httpx.get(f"{server.url}/docs").status_code == 200
    assert "/classify" in httpx.get(f"{server.url}/openapi.json").json()["paths"]


def test_healthcheck_command(server: Server) -> None:
    healthcheck = [sys.executable, "-m", "service.healthcheck"]
    assert subprocess.run(healthcheck, cwd=REPO, env=server.env, timeout=30).returncode == 0
    down = {**server.env, "TSC_PORT": str(free_port())}
    assert subprocess.run(healthcheck, cwd=REPO, env=down, timeout=30).returncode == 1


def test_graceful_shutdown_finishes_in_flight_requests(model_dir: Path, tmp_path: Path) -> None:
    # SIGTERM arrives while the request's body is still coming in: uvicorn waits for it, and it is answered.
    server = start_service(model_dir, tmp_path / "server.log")
    upload = httpx.Request("POST", f"{server.url}/classify", files={"file": ("a.png", encode(picture()))})
    body = upload.read()
    head = f"POST /classify HTTP/1.1\r\nHost: t\r\nContent-Type: {upload.headers['content-type']}\r\n"
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=30) as sock:
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[:64])
        deadline = time.monotonic() + 30
        while "tsc_http_requests_in_flight 2.0" not in httpx.get(f"{server.url}/metrics").text:
            assert time.monotonic() < deadline, "the classify request never reached the server"
            time.sleep(0.05)  # until it is in flight (the other request in flight is this /metrics one)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the server is shutting down, waiting for this request
        sock.sendall(body[64:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    log = server.log.read_text()
    assert "Traceback" not in log
    assert re.search(r"POST /classify 200 [\d.]+ ms", log), log  # the access line (service.logs)
    assert re.search(r"POST /classify 200", log).start() < log.index("stopped")
