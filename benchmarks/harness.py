"""What the benchmark scripts share: a checkpoint to serve and a real ``python -m service`` subprocess."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import torch

REPO = Path(__file__).resolve().parent.parent


def server_benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser described by its module docstring, with the model arguments added."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    return parser


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model-dir/--model (serve existing checkpoints) or --arch/--T (convert an untrained zoo model)."""
    parser.add_argument("--model-dir", type=Path, help="serve this model directory (default: convert --arch)")
    parser.add_argument("--model", help="model to request (default: the server's default)")
    parser.add_argument(
        "--arch", default="resnet20", help="zoo model to convert untrained (default %(default)s)"
    )
    parser.add_argument("--T", type=int, default=8, help="TSC steps per layer of the converted model")


def model_dir(args: argparse.Namespace, scratch: Path) -> Path:
    """The directory to serve: --model-dir, or ``scratch`` holding a freshly converted untrained --arch."""
    if args.model_dir is not None:
        return args.model_dir
    from converter import convert
    from converter.training.models import build_model, input_size

    torch.manual_seed(0)
    name = f"{args.arch}-untrained"
    print(f"converting an untrained {args.arch} (T={args.T}) to {scratch / name} ...", flush=True)
    calibration = torch.rand(64, *input_size(args.arch))
    convert(build_model(args.arch).eval(), calibration, T=args.T, name=name).save(scratch / name)
    return scratch


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running ``python -m service``."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def processes(self) -> list[psutil.Process]:
        """The server process and its children (the engine worker processes, when it runs them)."""
        server = psutil.Process(self.process.pid)
        return [server, *server.children(recursive=True)]

    def rss_mib(self) -> float:
        """Resident memory of the server process and its engine processes together."""
        return sum(_alive(lambda p: p.memory_info().rss, p) for p in self.processes()) / 2**20

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server and its engine processes have used so far."""
        return sum(_alive(lambda p: sum(p.cpu_times()[:2]), p) for p in self.processes())


@contextmanager
def serve(models: Path, env: dict[str, str] | None = None, timeout_s: float = 300) -> Iterator[Server]:
    """Start the server on a free loopback port, wait until /readyz is 200, SIGTERM it on exit."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="tsc-server-", suffix=".log")[1])
    argv = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    quiet = {"TSC_MODEL_DIR": str(models), "TSC_LOG_LEVEL": "warning", "TSC_GRPC_PORT": "0"}  # HTTP only
    full_env = {**os.environ, **quiet, **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + timeout_s
        while not _ready(server):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready; its log:\n{log.read_text()}")
            time.sleep(0.25)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def _alive(read: Callable[[psutil.Process], float], process: psutil.Process) -> float:
    """``read(process)``, or 0 for a process that has just ended."""
    try:
        return read(process)
    except psutil.NoSuchProcess:
        return 0.0


def _ready(server: Server) -> bool:
    try:
        return httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def requests_by_status(server: Server) -> dict[str, float]:
    """The server's own count of requests per status, read from /metrics."""
    counts: dict[str, float] = {}
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("tsc_http_requests_total{"):
            status = line.split('status="')[1].split('"')[0]
            counts[status] = counts.get(status, 0) + float(line.rsplit(" ", 1)[1])
    return dict(sorted(counts.items()))
