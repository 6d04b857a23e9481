"""Ray Serve throughput: the service (deploy/ray) with 1 and with 2 replicas, the same client load, one run.

    python -m benchmarks.ray_serve                  # converts an untrained resnet20 (T=8) and serves it
    python -m benchmarks.ray_serve --model-dir models --duration 20 --concurrency 32

Starts a local Ray cluster of --cpus CPUs, deploys the app with 1 replica, then scales it to 2; for each,
--concurrency requests stay in flight (httpx, asyncio) for --duration seconds, all POST /classify of one
PNG. Prints images/s for each replica count, the requests each replica answered (``X-Serve-Replica``) and
the ratio of 2 to 1 replica. Every replica gets --cpus / 2 CPUs and --threads torch threads. The client runs
on the same machine, so on a small one it takes cores from the replicas it measures.
"""

from __future__ import annotations

import asyncio
import io
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import torch
from PIL import Image

from benchmarks.harness import free_port, model_dir, server_benchmark_parser
from deploy.ray.app import REPLICA_HEADER
from deploy.ray.local import deploy, local_cluster, running_replicas
from service.registry import discover
from service.settings import Settings

REPLICAS = (1, 2)


def png(side: int) -> bytes:
    """A random RGB PNG of ``side`` x ``side`` pixels."""
    pixels = (torch.rand(side, side, 3) * 255).to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


async def load(url: str, image: bytes, concurrency: int, seconds: float) -> tuple[float, Counter[str], int]:
    """``concurrency`` requests in flight for ``seconds``: images/s, answers per replica, failed requests."""
    replicas: Counter[str] = Counter()
    failed = 0
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def post() -> httpx.Response:
            """POST /classify of the image."""
            return await client.post("/classify", files={"file": ("x.png", image, "image/png")})

        await asyncio.gather(*(post() for _ in range(2 * concurrency)))  # warm-up: threads, batches
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            """Post back to back until the time is up, counting answers by replica and failures."""
            nonlocal failed
            while time.perf_counter() < stop_at:
                response = await post()
                if response.status_code == 200:
                    replicas[response.headers[REPLICA_HEADER]] += 1
                else:
                    failed += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return replicas.total() / elapsed, replicas, failed


def main() -> int:
    """Run the benchmark and print its table; 1 when any request failed."""
    parser = server_benchmark_parser(__doc__)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per replica count")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--threads", type=int, default=1, help="TSC_TORCH_THREADS of each replica")
    parser.add_argument("--image-side", type=int, default=32, help="side of the uploaded PNG")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        models = model_dir(args, Path(scratch))
        name = args.model or next(iter(discover(models)))
        settings = Settings(model_dir=models, default_model=name, torch_threads=args.threads)
        image, results = png(args.image_side), {}
        with local_cluster(free_port, num_cpus=args.cpus) as url:
            for replicas in REPLICAS:
                deploy(settings, replicas, cpus_per_replica=args.cpus / max(REPLICAS))
                assert running_replicas() == replicas
                print(f"{replicas} replica(s) for {args.duration:.0f} s ...", flush=True)
                results[replicas] = asyncio.run(load(url, image, args.concurrency, args.duration))

    print(f"\nmodel {name}; {args.cpus} Ray CPUs, {args.threads} torch thread(s) per replica")
    print(f"{'replicas':>8} {'images/s':>9} {'failed':>6}  answers per replica")
    for replicas, (throughput, served, failed) in results.items():
        print(f"{replicas:>8} {throughput:>9.1f} {failed:>6}  {sorted(served.values(), reverse=True)}")
    ratio = results[2][0] / results[1][0]
    print(f"2 replicas / 1 replica: {ratio:.2f}x")
    return 1 if any(failed for _, _, failed in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
