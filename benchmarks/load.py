"""Load test: a real ``python -m service`` under concurrency 1, 8 and 32, against the raw engine.

    python -m benchmarks.load                       # converts an untrained resnet20 (T=8) and serves it
    python -m benchmarks.load --model-dir models    # the checkpoints of the repository
    python -m benchmarks.load --duration 20 --concurrency 1 8 32 64 --json results.json
    python -m benchmarks.load --engine-workers process   # only the default (both kinds by default)

For each kind of engine worker (``TSC_ENGINE_WORKERS``: threads of the server process, or a process per
lane) and each concurrency it prints requests, errors, throughput, p50/p95/p99 latency, the median time an
image waited for its batch (the server's ``queue_ms``), the mean server batch size, the CPU the server and
its engine processes used (cores busy, milliseconds per request), the cores the client kept busy, and the
ratio of HTTP throughput to the raw engine throughput (``net.run`` of the fast engine on full batches, in
this process, with the same torch threads) measured in the same run; at concurrency 1, p50 minus the raw
engine's time for one image; then the server's RSS (engine processes included) before and after.
Targets: HTTP/raw >= 0.8 at concurrency >= 8, p50 at concurrency 1 within 3 ms of the raw engine's time
for one image, zero errors. Exit status 1 when any request failed.
"""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import torch
from PIL import Image

from benchmarks.harness import Server, model_dir, serve, server_benchmark_parser
from converter import load
from service.registry import discover
from service.settings import Settings


def raw_throughput(checkpoint: Path, batch_size: int, seconds: float, threads: int) -> float:
    """Images per second of ``net.run(engine="fast")`` on full batches, no HTTP, no decoding."""
    torch.set_num_threads(threads)
    net = load(checkpoint)
    spec = net.input_spec
    images = torch.rand(batch_size, spec.channels, spec.height, spec.width)
    net.run(images[:1])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        net.run(images)
        done += batch_size
    return done / (time.perf_counter() - started)


def classify_request(server: Server, model: str, side: int) -> bytes:
    """A complete keep-alive HTTP/1.1 POST /classify of a photo-sized JPEG, built once and sent as is."""
    pixels = (torch.rand(side, side, 3) * 255).to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    files = {"file": ("x.jpg", buffer.getvalue(), "image/jpeg")}
    request = httpx.Request("POST", f"{server.url}/classify", params={"model": model}, files=files)
    body = request.read()
    head = (
        f"POST {request.url.raw_path.decode()} HTTP/1.1\r\nHost: {request.url.netloc.decode()}\r\n"
        f"Content-Type: {request.headers['content-type']}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response with a Content-Length."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in head if line.lower().startswith("content-length:"))
    return int(head[0].split()[1]), await reader.readexactly(length)


async def hammer(server: Server, request: bytes, concurrency: int, seconds: float) -> dict:
    """``concurrency`` keep-alive connections posting back to back for ``seconds``: latency, errors, CPU.

    The client is a few lines of asyncio streams, so it costs far less CPU than the server it measures.
    """
    latencies: list[float] = []
    batch_sizes: list[int] = []
    queue_ms: list[float] = []
    errors: Counter[str] = Counter()
    url = httpx.URL(server.url)
    stop_at = time.perf_counter() + seconds

    async def connection() -> None:
        while time.perf_counter() < stop_at:
            try:
                reader, writer = await asyncio.open_connection(url.host, url.port)
            except OSError as exc:
                errors[type(exc).__name__] += 1
                continue
            try:
                while time.perf_counter() < stop_at:
                    started = time.perf_counter()
                    writer.write(request)
                    status, body = await read_response(reader)
                    if status != 200:
                        errors[str(status)] += 1
                        continue
                    latencies.append(time.perf_counter() - started)
                    latency = json.loads(body)["latency"]
                    batch_sizes.append(latency["batch_size"])
                    queue_ms.append(latency["queue_ms"])
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                errors[type(exc).__name__] += 1
            finally:
                writer.close()

    began, cpu, client_cpu = time.perf_counter(), server.cpu_seconds(), time.process_time()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - began, server.cpu_seconds() - cpu
    client_cpu = time.process_time() - client_cpu
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": dict(errors),
        "throughput": len(latencies) / elapsed,
        "p50_ms": quantiles[49] * 1000,
        "p95_ms": quantiles[94] * 1000,
        "p99_ms": quantiles[98] * 1000,
        "queue_p50_ms": statistics.median(queue_ms) if queue_ms else float("nan"),
        "mean_batch": statistics.fmean(batch_sizes) if batch_sizes else 0.0,
        "server_cores": cpu / elapsed,
        "client_cores": client_cpu / elapsed,
        "server_cpu_ms": cpu / max(len(latencies), 1) * 1000,
    }


def main() -> int:
    """Run the benchmark and print its table; 1 when any request failed."""
    parser = server_benchmark_parser(__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--batch-size", type=int, default=32, help="TSC_MAX_BATCH_SIZE of the server")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="TSC_MAX_BATCH_DELAY_MS of the server")
    parser.add_argument("--threads", type=int, default=Settings().torch_threads, help="TSC_TORCH_THREADS")
    parser.add_argument("--image-side", type=int, default=256, help="side of the uploaded JPEG")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--engine-workers",
        nargs="+",
        choices=("thread", "process"),
        default=["thread", "process"],
        help="TSC_ENGINE_WORKERS kinds to measure, one server each (default: both, threads first)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        models = model_dir(args, Path(scratch))
        found = discover(models)
        name = args.model or next(iter(found))
        env = {
            "TSC_DEFAULT_MODEL": name,
            "TSC_MAX_BATCH_SIZE": str(args.batch_size),
            "TSC_MAX_BATCH_DELAY_MS": str(args.delay_ms),
            "TSC_TORCH_THREADS": str(args.threads),
            "TSC_MAX_QUEUE_SIZE": str(max(256, 2 * max(args.concurrency))),
        }
        print(f"raw engine: {name}, batch {args.batch_size}, {args.threads} torch threads ...", flush=True)
        raw = raw_throughput(found[name], args.batch_size, max(args.duration / 2, 3.0), args.threads)
        raw_single = raw_throughput(found[name], 1, max(args.duration / 4, 2.0), args.threads)
        runs, rss = [], {}
        for kind in args.engine_workers:
            with serve(models, env | {"TSC_ENGINE_WORKERS": kind}) as server:
                before = server.rss_mib()
                request = classify_request(server, name, args.image_side)
                for concurrency in args.concurrency:
                    print(
                        f"{kind} workers, concurrency {concurrency} for {args.duration:.0f} s ...", flush=True
                    )
                    run = asyncio.run(hammer(server, request, concurrency, args.duration))
                    runs.append({"workers": kind, **run, "http_over_raw": run["throughput"] / raw})
                rss[kind] = [before, server.rss_mib()]

    single_ms = 1000 / raw_single
    print(f"\nmodel {name}; raw engine {raw:.1f} img/s at batch {args.batch_size}, {single_ms:.2f} ms alone")
    columns = ("workers", "conc", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "queue ms")
    columns += ("batch", "server", "CPU ms", "client", "HTTP/raw")
    keys = ("throughput", "p50_ms", "p95_ms", "p99_ms", "queue_p50_ms", "mean_batch")
    keys += ("server_cores", "server_cpu_ms", "client_cores", "http_over_raw")
    row = "{:>8} {:>5} {:>9} {:>7}" + " {:>8}" * (len(keys) - 1) + " {:>9}"
    print(row.format(*columns))
    for run in runs:
        figures = [run[key] for key in keys]
        errors = sum(run["errors"].values())
        print(
            row.format(
                run["workers"], run["concurrency"], run["requests"], errors, *(f"{x:.2f}" for x in figures)
            )
        )
    for kind, (before, after) in rss.items():
        lone = [r for r in runs if r["workers"] == kind and r["concurrency"] == 1]
        extra = f"; p50 at concurrency 1 is raw + {lone[0]['p50_ms'] - single_ms:.2f} ms" if lone else ""
        print(f"{kind} workers: server RSS {before:.0f} MiB before, {after:.0f} MiB after{extra}")
    failed = sum(sum(run["errors"].values()) for run in runs)
    if args.json:
        summary = {"model": name, "raw_img_s": raw, "raw_img_s_batch1": raw_single, "runs": runs}
        args.json.write_text(json.dumps({**summary, "rss_mib": rss}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
