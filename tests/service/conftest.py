"""Fixtures: tiny checkpoints converted in code and an in-process client serving them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import torch
from servicetools import LABELS, encode, picture, serve, settings_for, tiny_cnn

from converter import convert


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory with ``tiny`` (RGB 32x32, T=4) and ``tiny-gray`` (greyscale 28x28, T=4)."""
    root = tmp_path_factory.mktemp("models")
    for name, channels, side in (("tiny", 3, 32), ("tiny-gray", 1, 28)):
        net = convert(tiny_cnn(channels), torch.rand(32, channels, side, side), T=4, name=name, labels=LABELS)
        net.save(root / name)
    return root


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run async tests and fixtures on asyncio."""
    return "asyncio"


@pytest.fixture(scope="session")
async def client(model_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of one app serving the tiny models, shared by the API tests."""
    async with serve(settings_for(model_dir)) as c:
        yield c


@pytest.fixture
def png() -> bytes:
    """A small RGB PNG."""
    return encode(picture())
