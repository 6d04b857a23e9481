"""The server as the image runs it: its CMD and ENV, as the image's uid:gid, on models it may only read.

Models are converted here and saved as the converter writes them (the image copies models/ as it finds
it), then ``python -m service`` runs as 10001:10001 with no supplementary groups. Needs root (to switch
users) and an interpreter, virtualenv and checkout that other users can read; skipped, saying which, if not.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from servicetools import LABELS, REPO, Server, encode, picture, start, tiny_cnn
from test_service_server import container_command

from benchmarks.harness import free_port
from converter import convert
from tests.deploy.deploytools import image_env, image_user

UID, GID = image_user()


def blocked(path: Path) -> Path | None:
    """The first folder above ``path`` that others cannot enter, or ``path`` if they cannot read it."""
    for folder in reversed(path.parents):
        if not folder.stat().st_mode & stat.S_IXOTH:
            return folder
    return None if path.stat().st_mode & stat.S_IROTH else path


def unreadable_for_others() -> str | None:
    """Why the image's uid could not run this interpreter on this checkout, or None when it can."""
    needed = [
        Path(sys.executable).resolve(),
        Path(os.__file__),  # the standard library
        Path(torch.__file__),  # the virtualenv's packages
        REPO / "service" / "__main__.py",
    ]
    for path in needed:
        culprit = blocked(path)
        if culprit is not None:
            mode = stat.filemode(culprit.stat().st_mode)
            return f"{path} is out of reach of uid {UID}: {culprit} is {mode}"
    return None


@pytest.fixture
def switchable() -> None:
    """Skip unless this process may start one as the image's user and that user can read what it runs."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root to start the server as uid {UID}:{GID} (running as uid {os.geteuid()})")
    reason = unreadable_for_others()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def models(switchable: None) -> Iterator[Path]:
    """A model directory owned by root, like the image's /app/models, with ``tiny`` saved by the converter."""
    root = Path(tempfile.mkdtemp(prefix="tsc-models-"))  # not under pytest's 0700 base folder
    try:
        root.chmod(0o755)  # what COPY gives the image's folder
        previous = os.umask(0o022)  # the usual umask, which the converter honours
        try:
            net = convert(tiny_cnn(3), torch.rand(32, 3, 32, 32), T=4, name="tiny", labels=LABELS)
            net.save(root / "tiny")
        finally:
            os.umask(previous)
        yield root
    finally:
        shutil.rmtree(root)


def as_image_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every Popen from now on start its process as the image's uid:gid, without other groups."""
    popen = functools.partial(subprocess.Popen, user=UID, group=GID, extra_groups=[])
    monkeypatch.setattr(subprocess, "Popen", popen)


def test_serves_as_the_image_user_from_read_only_models(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modes = {str(p.relative_to(models)): stat.S_IMODE(p.stat().st_mode) for p in [models, *models.rglob("*")]}
    assert modes == {
        ".": 0o755,
        "tiny": 0o755,
        "tiny/manifest.json": 0o644,
        "tiny/weights.safetensors": 0o644,
    }
    assert {p.stat().st_uid for p in models.rglob("*")} == {0}, "owned by root: read-only to uid 10001"

    argv = container_command()
    port = free_port()  # the image's TSC_PORT (8000) may be taken on this machine
    env = {**image_env(), "TSC_PORT": str(port), "TSC_MODEL_DIR": str(models), "HOME": "/nonexistent"}
    env |= {"TSC_TORCH_THREADS": "1", "TSC_RATE_STEPS": "8"}
    env.pop("PATH")  # the image's venv; python here is this interpreter
    log = tmp_path / "server.log"  # written through the descriptor root opens
    with monkeypatch.context() as patched:
        as_image_user(patched)
        server: Server = start([sys.executable, *argv[1:]], env, log, port)
    try:
        status = Path(f"/proc/{server.process.pid}/status").read_text().splitlines()
        ids = {
            line.split(":")[0]: line.split()[1:]
            for line in status
            if line.startswith(("Uid", "Gid", "Groups"))
        }
        assert ids == {"Uid": [str(UID)] * 4, "Gid": [str(GID)] * 4, "Groups": []}

        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["models"] == ["tiny"], ready.text
        listed = httpx.get(f"{server.url}/models", timeout=10).json()
        assert [m["name"] for m in listed["models"]] == ["tiny"] and listed["failed"] == {}, listed
        files = {"file": ("picture.png", encode(picture()), "image/png")}
        answer = httpx.post(f"{server.url}/classify", files=files, timeout=60)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"]["name"] == "tiny" and body["predictions"][0]["label"] in LABELS
        print(f"ids {ids}; modes { {k: oct(v) for k, v in modes.items()} }; {body['predictions'][0]}")
    finally:
        server.stop()
    assert "Traceback" not in log.read_text() and "Permission denied" not in log.read_text()
