"""Decode budget: large, cheap-to-send PNGs against a real ``python -m service``, and a small JPEG meanwhile.

    python -m benchmarks.decode --model-dir models     # 4 batches of 32 single-colour 6000x6000 PNGs
    python -m benchmarks.decode --model-dir models --env TSC_MAX_FULL_DECODE_PIXELS=40000000

A single-colour 6000x6000 PNG is about 117 KB on the wire and 108 MB once decoded. The script sends one of
them alone, then ``--batches`` concurrent /classify/batch requests of ``--files`` of them while a prober
posts a 1 KB JPEG every 100 ms; it prints each answer's status, the server CPU used, its RSS before, at the
peak (sampled every 20 ms) and two seconds after, and the prober's latency alone and during the batches.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

from benchmarks.harness import Server, model_dir, serve, server_benchmark_parser


def single_colour_png(side: int) -> bytes:
    """A ``side`` x ``side`` RGB PNG of one colour: tiny to send, ``3 * side**2`` bytes to decode."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 40, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def small_jpeg() -> bytes:
    """A 64x64 JPEG of about a kilobyte."""
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buffer, "JPEG", quality=60)
    return buffer.getvalue()


class PeakRss:
    """Samples the server's RSS in a thread while in use; ``peak`` is the largest seen (MiB)."""

    def __init__(self, server: Server) -> None:
        self.server, self.peak = server, server.rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        """Keep the largest RSS seen until stopped."""
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.server.rss_mib())

    def __enter__(self) -> PeakRss:
        """Start sampling."""
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join()


async def probe(
    client: httpx.AsyncClient, jpeg: bytes, until: asyncio.Event | None, count: int
) -> list[float]:
    """Latencies (ms) of the small JPEG posted every 100 ms: ``count`` times, or until ``until`` is set."""
    latencies: list[float] = []
    while (until is None and len(latencies) < count) or (until is not None and not until.is_set()):
        started = time.perf_counter()
        response = await client.post("/classify", files={"file": ("small.jpg", jpeg, "image/jpeg")})
        response.raise_for_status()
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.1)
    return latencies


@dataclass
class Figures:
    """What one run measured."""

    png_kb: float
    single: tuple[int, float, float]  # status, seconds, server CPU seconds
    statuses: dict[int, int]
    batches: tuple[float, float]  # seconds, server CPU seconds
    rss: tuple[float, float, float]  # MiB before, at the peak, 2 s after
    probe: tuple[float, float, float, int]  # ms: median alone, median and max during; requests during


async def measure(server: Server, args: argparse.Namespace) -> Figures:
    """Every figure the script prints, in one run against ``server``."""
    png, jpeg = single_colour_png(args.side), small_jpeg()
    files = [("files", (f"flat-{i}.png", png, "image/png")) for i in range(args.files)]
    async with httpx.AsyncClient(base_url=server.url, timeout=600) as client:
        alone = statistics.median(await probe(client, jpeg, None, 20))
        rss_before, cpu = server.rss_mib(), server.cpu_seconds()
        started = time.perf_counter()
        single = await client.post("/classify", files={"file": ("flat.png", png, "image/png")})
        single_s, single_cpu = time.perf_counter() - started, server.cpu_seconds() - cpu
        done = asyncio.Event()

        async def batches() -> list[httpx.Response]:
            try:
                posts = (client.post("/classify/batch", files=files) for _ in range(args.batches))
                return list(await asyncio.gather(*posts))
            finally:
                done.set()

        cpu = server.cpu_seconds()
        with PeakRss(server) as rss:
            started = time.perf_counter()
            answers, during = await asyncio.gather(batches(), probe(client, jpeg, done, 0))
            batches_s, batches_cpu = time.perf_counter() - started, server.cpu_seconds() - cpu
        await asyncio.sleep(2)
        return Figures(
            png_kb=len(png) / 1024,
            single=(single.status_code, single_s, single_cpu),
            statuses=dict(Counter(answer.status_code for answer in answers)),
            batches=(batches_s, batches_cpu),
            rss=(rss_before, rss.peak, server.rss_mib()),
            probe=(alone, statistics.median(during), max(during), len(during)),
        )


def main() -> int:
    """Run the measurement and print it."""
    parser = server_benchmark_parser(__doc__)
    parser.add_argument("--side", type=int, default=6000, help="side of the single-colour PNG")
    parser.add_argument("--batches", type=int, default=4, help="concurrent /classify/batch requests")
    parser.add_argument("--files", type=int, default=32, help="PNGs per batch request")
    parser.add_argument("--env", action="append", default=[], metavar="TSC_X=VALUE", help="server setting")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory() as scratch, serve(model_dir(args, Path(scratch)), env) as server:
        f = asyncio.run(measure(server, args))
    side = f"{args.side}x{args.side}"
    status, seconds, cpu = f.single
    print(
        f"one {side} single-colour PNG ({f.png_kb:.0f} KB): {status} in {seconds:.2f} s, "
        f"{cpu:.2f} s server CPU"
    )
    print(
        f"{args.batches} batches of {args.files}: statuses {f.statuses}, {f.batches[0]:.1f} s, "
        f"{f.batches[1]:.1f} s server CPU"
    )
    print("server RSS: {:.0f} MiB before, {:.0f} MiB at the peak, {:.0f} MiB 2 s after".format(*f.rss))
    alone, median, worst, n = f.probe
    print(
        f"1 KB JPEG: median {alone:.1f} ms alone; during the batches median {median:.1f} ms, "
        f"max {worst:.1f} ms ({n} requests)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
