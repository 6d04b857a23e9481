"""Helpers of the service tests: tiny networks, settings, in-process and subprocess servers, test pictures."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch
from PIL import Image
from torch import nn

from benchmarks.harness import free_port
from service.app import create_app
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def tiny_cnn(channels: int) -> nn.Module:
    """A small conv-pool-conv-linear classifier, enough to exercise every population kind."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, len(LABELS)),
    ).eval()


def settings_for(model_dir: Path, **overrides: Any) -> Settings:
    """Settings for tests: the tiny models, a short batching delay, a short rate-coded comparison."""
    values: dict[str, Any] = {
        "model_dir": model_dir,
        "default_model": "tiny",
        "max_batch_delay_ms": 2.0,
        "rate_steps": 8,
        "torch_threads": 1,
        "grpc_port": 0,  # tests/service/test_service_grpc.py serves gRPC on a free port
    }
    return Settings(**(values | overrides))


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan in-process, wait for model loading, and yield a client talking to it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.dataplane.wait_loaded()
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def encode(image: Image.Image, fmt: str = "PNG", **params: Any) -> bytes:
    """``image`` saved in ``fmt`` as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def picture(mode: str = "RGB", size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A deterministic picture: a colour gradient with a white square, converted to ``mode``."""
    w, h = size
    x = torch.linspace(0, 255, w).repeat(h, 1)
    y = torch.linspace(0, 255, h).unsqueeze(1).repeat(1, w)
    rgb = torch.stack([x, y, 255 - x], dim=2).to(torch.uint8)
    rgb[h // 4 : h // 2, w // 4 : w // 2] = 255
    return Image.fromarray(rgb.numpy(), "RGB").convert(mode)


@dataclass
class Server:
    """A service running as a subprocess: uvicorn serving at ``url``, its output in ``log``."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    env: dict[str, str]

    def stop(self) -> None:
        """SIGTERM, as ``docker stop`` sends; uvicorn drains, then re-raises the signal to exit with it."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=60) in (0, -signal.SIGTERM)


def start(argv: list[str], env: dict[str, str], log: Path, port: int) -> Server:
    """Run ``argv`` (the service, serving on ``port``) with ``env`` added, and wait until /readyz is 200;
    gRPC is off unless ``env`` sets TSC_GRPC_PORT (servers of tests running side by side would share 8001)."""
    env = {**os.environ, "TSC_GRPC_PORT": "0", **env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return Server(process, url, log, env)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"server not ready in time:\n{log.read_text()}")


def start_service(model_dir: Path, log: Path, **env: str) -> Server:
    """``python -m service`` on a free loopback port serving ``model_dir`` (default: tiny), with ``env``."""
    port = free_port()
    argv = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    return start(argv, {"TSC_MODEL_DIR": str(model_dir), "TSC_DEFAULT_MODEL": "tiny", **env}, log, port)
