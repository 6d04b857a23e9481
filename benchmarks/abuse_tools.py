"""What ``benchmarks.abuse`` measures with: a server started as the container starts it, raw HTTP exchanges
from chosen loopback addresses, the server's peak resident memory and a bystander's latency during an attack.
"""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks.harness import REPO, free_port

MiB = 2**20
Feed = Callable[[asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Target:
    """The server under attack: its URL and key, its process when this run started it, and its log."""

    url: str
    key: str | None
    pid: int | None = None
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Host and port."""
        host, port = self.url.split("://", 1)[1].rsplit(":", 1)
        return host, int(port)

    @property
    def headers(self) -> dict[str, str]:
        """The headers of an authenticated request."""
        return {"X-API-Key": self.key} if self.key else {}


@contextmanager
def launch(models: Path, env: dict[str, str], key: str | None, timeout_s: float = 300) -> Iterator[Target]:
    """``python -m service`` on a free loopback port; yields once model loading has ended, SIGTERM after."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="tsc-abuse-", suffix=".log")[1])
    full = {**os.environ, "TSC_GRPC_PORT": "0", **env, "TSC_MODEL_DIR": str(models), "TSC_HOST": "127.0.0.1"}
    full["TSC_PORT"] = str(port)
    full.pop("TSC_API_KEY", None)
    full |= {"TSC_API_KEY": key} if key else {}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=REPO, env=full, stdout=out, stderr=subprocess.STDOUT
        )
    target = Target(f"http://127.0.0.1:{port}", key, process.pid, process, log)
    try:
        deadline = time.monotonic() + timeout_s
        while not _loaded(target):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not finish loading; its log:\n{log.read_text()}")
            time.sleep(0.25)
        yield target
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def _loaded(target: Target) -> bool:
    """Whether the server answers /readyz with anything but "models are loading"."""
    try:
        answer = httpx.get(f"{target.url}/readyz", timeout=2)
    except httpx.TransportError:
        return False
    return answer.status_code == 200 or "loading" not in answer.text


def vm_kib(pid: int, field: str) -> int:
    """A ``Vm*`` line of /proc/PID/status, in KiB (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """The peak resident memory of ``pid`` while the block runs: VmHWM, reset at the start through
    /proc/PID/clear_refs where that is allowed, and VmRSS sampled every 20 ms."""

    def __init__(self, pid: int | None) -> None:
        self.pid, self.peak_kib, self._reset = pid, 0, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        if self.pid is not None:
            try:
                Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # 5: reset the peak (VmHWM)
                self._reset = True
            except OSError:
                pass
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pid is not None:
            self._stop.set()
            self._thread.join()
            if self._reset:
                self.peak_kib = max(self.peak_kib, vm_kib(self.pid, "VmHWM"))

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_kib = max(self.peak_kib, vm_kib(self.pid, "VmRSS"))

    @property
    def mib(self) -> float | None:
        """The peak in MiB; None without a process to watch."""
        return None if self.pid is None else self.peak_kib / 1024


def png(size: tuple[int, int] = (32, 32), color: tuple[int, int, int] = (120, 60, 200)) -> bytes:
    """A plain RGB PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def _bystander(url: str, key: str | None, source: str, stop: object, ready: object, out: object) -> None:
    """Post a small PNG to /classify in a loop from ``source`` until ``stop``; put (ms, status) pairs."""
    transport = httpx.HTTPTransport(local_address=source, limits=httpx.Limits(max_keepalive_connections=0))
    headers = {"X-API-Key": key} if key else {}
    image, results = png(), []
    with httpx.Client(base_url=url, transport=transport, timeout=10, headers=headers) as client:
        while not stop.is_set():  # type: ignore[attr-defined]
            started = time.perf_counter()
            try:
                status = client.post("/classify", files={"file": ("b.png", image)}).status_code
            except httpx.HTTPError:
                status = 0
            results.append(((time.perf_counter() - started) * 1000, status))
            ready.set()  # type: ignore[attr-defined]
            stop.wait(0.05)  # type: ignore[attr-defined]
    out.put(results)  # type: ignore[attr-defined]


@contextmanager
def bystander(target: Target, source: str) -> Iterator[list[tuple[float, int]]]:
    """A legitimate client in another process, from ``source``; its (ms, status) list fills on exit."""
    context = multiprocessing.get_context("spawn")
    stop, ready, out = context.Event(), context.Event(), context.Queue()
    process = context.Process(target=_bystander, args=(target.url, target.key, source, stop, ready, out))
    process.start()
    results: list[tuple[float, int]] = []
    ready.wait(60)  # its first answer: the interpreter and the client are up
    try:
        yield results
    finally:
        stop.set()
        results += out.get(timeout=60)
        process.join(10)


def latency(results: list[tuple[float, int]]) -> dict[str, object]:
    """Requests, p50 and p95 in ms, the answers that were not 200 and the statuses (0: no answer)."""
    ms = [m for m, _ in results]
    p50, p95 = np.percentile(ms, [50, 95]) if ms else (float("nan"), float("nan"))
    return {
        "requests": len(ms),
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "not_200": sum(s != 200 for _, s in results),
        "statuses": dict(Counter(str(s) for _, s in results)),
    }


@dataclass
class Reply:
    """What one raw exchange got: a status (None: none) and its JSON error code, or what happened instead."""

    status: int | None
    outcome: str  # "200", "503 overloaded", or "reset", "closed", "timeout", "connect failed"
    seconds: float


def head(method: str, path: str, headers: dict[str, str], length: int | None) -> bytes:
    """An HTTP/1.1 request line and headers; Content-Length when ``length`` is given."""
    lines = [f"{method} {path} HTTP/1.1", "Host: abuse", *(f"{k}: {v}" for k, v in headers.items())]
    lines += [f"Content-Length: {length}"] if length is not None else []
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def exchange(
    target: Target, source: str, request: bytes, feed: Feed | None = None, timeout_s: float = 60
) -> Reply:
    """Connect from ``source``, send ``request`` and then whatever ``feed`` writes (the connection is held
    after that), and read the answer until ``timeout_s``; the feed stops once an answer comes."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    host, port = target.address
    try:
        connecting = asyncio.open_connection(host, port, local_addr=(source, 0), limit=2**20)
        reader, writer = await asyncio.wait_for(connecting, timeout_s)
    except (OSError, asyncio.TimeoutError):
        return Reply(None, "connect failed", loop.time() - started)

    async def send() -> None:
        try:
            writer.write(request)
            await writer.drain()
            if feed is not None:
                await feed(writer)
        except OSError:  # the server answered and closed: the rest is not wanted
            pass

    sender = asyncio.create_task(send())
    try:
        status, outcome = await asyncio.wait_for(_answer(reader), timeout_s - (loop.time() - started))
    except asyncio.TimeoutError:
        status, outcome = None, "timeout"
    except OSError:
        status, outcome = None, "reset"
    finally:
        sender.cancel()
        writer.transport.abort()
    return Reply(status, outcome, loop.time() - started)


async def _answer(reader: asyncio.StreamReader) -> tuple[int | None, str]:
    """The status and JSON error code of the answer on ``reader``; (None, "closed") when none comes."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None, "closed"
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    length = int(next((v for k, v in fields.items() if k.lower() == "content-length"), "0"))
    body = await reader.readexactly(length) if length else b""
    try:
        error = json.loads(body).get("error") if status >= 400 else ""
    except (ValueError, AttributeError):
        error = "not JSON"
    code = error if re.fullmatch(r"[a-z_ ]+", error) else ""  # /v2 errors are messages: the status alone
    return status, f"{status} {code}" if code else str(status)


def server_cpu_s(pid: int | None) -> float:
    """User plus system CPU seconds ``pid`` has used (0 without a process)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
