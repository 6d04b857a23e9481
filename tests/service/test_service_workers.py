"""Engines in worker processes (the server's default): the same answers as in a thread, a dead process is
replaced with its networks, and stopping ends a process that still runs a batch."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from servicetools import REPO, encode, picture, serve, settings_for

from service import workers
from service.errors import EngineFailed

ENGINES = ("fast", "raw", "ann")


def _answers(worker, key: str, images: list[torch.Tensor]) -> dict[str, list]:
    """Each engine's results for ``images`` from ``worker``."""
    return {e: worker.submit(workers.run, key, images, e, False, 8).result(60) for e in ENGINES}


def test_a_process_answers_what_a_thread_answers(model_dir: Path) -> None:
    images = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    process = workers.start_worker("process", "interactive", 1)
    thread = workers.start_worker("thread", "interactive", 1)
    try:
        for worker in (process, thread):
            worker.submit(workers.load_network, "k", model_dir / "tiny", "float32", "cpu").result(120)
        ours, theirs = _answers(process, "k", images), _answers(thread, "k", images)
        assert ours == theirs  # logits, probabilities and every count, image by image
        assert {r.engine for runs in ours.values() for r in runs} == set(ENGINES)
    finally:
        thread.submit(workers.unload, "k").result(10)
        process.shutdown(wait=False)
        thread.shutdown()


def test_a_dead_process_fails_its_batch_and_a_new_one_serves_the_same_network(model_dir: Path) -> None:
    worker = workers.ProcessWorker("interactive", 1)
    try:
        worker.submit(workers.load_network, "k", model_dir / "tiny", "float32", "cpu").result(120)
        image = [torch.rand(3, 32, 32)]
        before = worker.submit(workers.run, "k", image, "fast", False, 8).result(60)
        pid = worker.submit(os.getpid).result(10)
        sleeping = worker.submit(time.sleep, 30)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(EngineFailed, match="interactive engine process stopped"):
            sleeping.result(30)
        after = worker.submit(workers.run, "k", image, "fast", False, 8).result(120)  # loaded again first
        assert after == before and worker.submit(os.getpid).result(10) != pid
    finally:
        worker.shutdown(wait=False)


def test_stopping_without_waiting_ends_a_process_that_runs_a_batch() -> None:
    worker = workers.ProcessWorker("reference", 1)
    pid = worker.submit(os.getpid).result(120)
    worker.submit(time.sleep, 60)  # a batch torch cannot be asked to stop
    time.sleep(0.2)
    started = time.monotonic()
    worker.shutdown(wait=False, cancel_futures=True)
    while time.monotonic() - started < 10:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the engine process still runs 10 s after stopping")


def test_an_engine_process_ends_when_the_server_process_is_killed() -> None:
    code = (
        "import os\n"
        "from service.workers import ProcessWorker\n"
        "if __name__ == '__main__':\n"
        "    worker = ProcessWorker('interactive', 1)\n"
        "    print(worker.submit(os.getpid).result(120), flush=True)\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180)
    pid = int(done.stdout.split()[0])
    started = time.monotonic()
    while time.monotonic() - started < 10:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the engine process outlived its server process by 10 s")


@pytest.mark.anyio
async def test_the_app_serves_from_engine_processes(model_dir: Path) -> None:
    png = encode(picture())
    answers = {}
    for kind in ("process", "thread"):
        async with serve(settings_for(model_dir, engine_workers=kind)) as client:
            got = await asyncio.gather(
                *(client.post("/classify?compare=true", files={"file": ("a.png", png)}) for _ in range(3))
            )
            assert all(r.status_code == 200 for r in got), [r.text for r in got]
            answers[kind] = [r.json() for r in got]
    for ours, theirs in zip(answers["process"], answers["thread"], strict=True):
        for key in ("model", "predictions", "spikes", "operations"):  # TSC's: float64's in either worker
            assert ours[key] == theirs[key], key
        for engine in ("ann", "rate"):  # float32 as it comes: the same to rounding
            mine, other = ours["comparison"][engine], theirs["comparison"][engine]
            assert [p["index"] for p in mine["predictions"]] == [p["index"] for p in other["predictions"]]
            for a, b in zip(mine["predictions"], other["predictions"], strict=True):
                assert a["probability"] == pytest.approx(b["probability"], rel=1e-5)
