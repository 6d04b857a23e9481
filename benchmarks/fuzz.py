"""Fuzzing a real server: schemathesis against /openapi.json, then hostile and mutated images.

    python -m benchmarks.fuzz                            # converts an untrained resnet20 (T=2) and serves it
    python -m benchmarks.fuzz --examples 300 --mutations 5000 --model-dir models

Passes (exit 0) when schemathesis finds nothing (all checks but positive_data_acceptance: schema-valid random
bytes are not images, so 400 is the right answer), every corpus file gets its expected status, no mutated
image gets a 5xx or breaks the connection, the server's own /metrics count no 5xx, and it is still ready.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import struct
import subprocess
import sys
import tempfile
import zlib
from collections import Counter
from pathlib import Path

import httpx
from PIL import Image

from benchmarks.harness import Server, model_dir, requests_by_status, serve, server_benchmark_parser

UPLOAD_LIMIT = 4 * 2**20
PIXEL_LIMIT = 40_000_000


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int, idat: bytes = b"") -> bytes:
    """An 8-bit greyscale PNG header declaring ``width`` x ``height`` with the given compressed pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF whose screen and one frame declare ``width`` x ``height`` with (almost) no pixel data."""
    size = struct.pack("<HH", width, height)
    frame = b"," + struct.pack("<HH", 0, 0) + size + b"\0" + b"\x02\x02\x4c\x01\0"
    return b"GIF89a" + size + b"\0\0\0" + frame + b";"


def encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    """``image`` in ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def sample_images(rng: random.Random) -> dict[str, bytes]:
    """Valid small images in every supported format and several modes."""
    pixels = bytes(rng.randrange(256) for _ in range(48 * 40 * 3))
    rgb = Image.frombytes("RGB", (48, 40), pixels)
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return {
        "rgb.png": encoded(rgb, "PNG"),
        "rgba.png": encoded(rgb.convert("RGBA"), "PNG"),
        "palette.png": encoded(rgb.convert("P"), "PNG", transparency=0),
        "grey16.png": encoded(rgb.convert("I;16"), "PNG"),
        "photo.jpg": encoded(rgb, "JPEG", quality=85),
        "cmyk.jpg": encoded(rgb.convert("CMYK"), "JPEG"),
        "rgb.webp": encoded(rgb, "WEBP"),
        "rgb.bmp": encoded(rgb, "BMP"),
        "animated.gif": encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "animated.webp": encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "1x1.png": encoded(Image.new("RGB", (1, 1)), "PNG"),
        "1x1.gif": encoded(Image.new("P", (1, 1)), "GIF"),
        "1x5000.png": encoded(Image.new("L", (1, 5000)), "PNG"),
    }


def corpus(rng: random.Random) -> list[tuple[str, bytes, str, set[int]]]:
    """(name, bytes, content type, acceptable statuses): valid, malformed, hostile and unsupported files."""
    valid = sample_images(rng)
    png, jpeg = valid["rgb.png"], valid["photo.jpg"]
    exif = Image.Exif()
    exif[0x0112] = 6
    cases = [(name, data, "application/octet-stream", {200}) for name, data in valid.items()]
    cases += [
        (
            "exif-rotated.jpg",
            encoded(Image.open(io.BytesIO(jpeg)), "JPEG", exif=exif.tobytes()),
            "image/jpeg",
            {200},
        ),
        ("zero-bytes.png", b"", "image/png", {400}),
        ("truncated.png", png[: len(png) // 2], "image/png", {400}),
        ("truncated.jpg", jpeg[: len(jpeg) // 3], "image/jpeg", {200, 400}),  # libjpeg may pad a cut scan
        ("header-only.jpg", jpeg[:20], "image/jpeg", {400}),
        ("wrong-magic.png", b"\x89PNX" + png[4:], "image/png", {400}),
        ("jpeg-magic-png-body.jpg", b"\xff\xd8\xff" + png[3:], "image/jpeg", {400}),
        ("random.bin", rng.randbytes(5000), "application/octet-stream", {400}),
        ("20000x20000-header.png", png_declaring(20000, 20000), "image/png", {413}),
        ("65535x65535-header.gif", gif_declaring(65535, 65535), "image/gif", {413}),
        (
            "bomb-12000x12000.png",
            png_declaring(12000, 12000, zlib.compress(b"\0" * 12001 * 12000, 9)),
            "image/png",
            {413},
        ),
        ("huge.png", png + rng.randbytes(UPLOAD_LIMIT), "image/png", {413}),
        ("text.txt", b"hello, world", "text/plain", {415}),
        ("document.pdf", b"%PDF-1.7\n%...", "application/pdf", {415}),
        ("picture.tiff", encoded(Image.open(io.BytesIO(png)), "TIFF"), "image/tiff", {415}),
        ("picture.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", {415}),
    ]
    return cases


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A random corruption of ``data``: flipped bytes, a cut, a duplicated or a deleted span."""
    data = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:
        del data[rng.randrange(1, len(data)) :]
    else:
        start = rng.randrange(len(data))
        end = min(len(data), start + rng.randint(1, 64))
        data[start:end] = data[start:end] * 2 if kind == 2 else b""
    return bytes(data)


def run_schemathesis(server: Server, examples: int, seed: int) -> int:
    """Schemathesis over every operation of the live OpenAPI document but the repository's load and unload,
    which change what is served by design (tests/service/test_service_repository.py covers them); its
    exit status."""
    # One worker: concurrent ones trip CPython 3.11's ast thread-safety check inside hypothesis.
    options = "--checks all --exclude-checks positive_data_acceptance --workers 1 --request-timeout 120"
    options += " --exclude-path-regex ^/v2/repository/models/"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{server.url}/openapi.json",
        *options.split(),
    ]
    command += ["--max-examples", str(examples), "--seed", str(seed), "--suppress-health-check", "too_slow"]
    return subprocess.run(command, check=False).returncode


async def post_corpus(server: Server, args: argparse.Namespace, rng: random.Random) -> list[str]:
    """Send the corpus (each case under every option mix) and the mutations; the list of problems found."""
    problems: list[str] = []
    statuses: Counter[int] = Counter()
    cases = corpus(rng)
    jobs = [
        ("/classify", {"file": (name, data, ctype)}, params, expected)
        for name, data, ctype, expected in cases
        for params in ({}, {"top_k": "1", "compare": "true"}, {"engine": "stepped"})
    ]
    images = [data for _, data, _, expected in cases if expected == {200}]
    for i in range(args.mutations):
        data = mutate(rng.choice(images), rng)
        jobs.append(("/classify", {"file": (f"mutant-{i}", data, "image/png")}, {}, {200, 400, 413}))
    for i in range(args.mutations // 8):
        files = [("files", (f"batch-{i}-{j}", mutate(rng.choice(images), rng))) for j in range(4)]
        jobs.append(("/classify/batch", files, {"top_k": "3"}, {200, 400, 413}))
    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            path, files, params, expected = queue.get_nowait()
            name = files[0][1][0] if isinstance(files, list) else next(iter(files.values()))[0]
            try:
                response = await client.post(path, files=files, params=params)
            except httpx.HTTPError as exc:
                problems.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            statuses[response.status_code] += 1
            if response.status_code not in expected:
                problems.append(
                    f"{name} {params}: {response.status_code} not in {sorted(expected)}: {response.text}"
                )

    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        await asyncio.gather(*(worker(client) for _ in range(args.concurrency)))
    print(f"corpus and mutations: {len(jobs)} requests, statuses {dict(sorted(statuses.items()))}")
    return problems


def main() -> int:
    """Fuzz and report; 1 on any failure."""
    parser = server_benchmark_parser(__doc__)
    parser.set_defaults(T=2)
    parser.add_argument("--examples", type=int, default=150, help="schemathesis examples per operation")
    parser.add_argument("--mutations", type=int, default=2000, help="mutated images to send")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        models = model_dir(args, Path(scratch))
        env = {
            "TSC_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
            "TSC_MAX_IMAGE_PIXELS": str(PIXEL_LIMIT),
            "TSC_MAX_QUEUE_SIZE": "4096",  # back-pressure (503 queue_full) is the load test's business
            "TSC_RATE_STEPS": "16",
            "TSC_LOG_LEVEL": "error",
        }
        with serve(models, env) as server:
            before = requests_by_status(server)  # the readiness polls while models loaded
            schemathesis_status = run_schemathesis(server, args.examples, args.seed)
            problems = asyncio.run(post_corpus(server, args, rng))
            counts = {s: n - before.get(s, 0) for s, n in requests_by_status(server).items()}
            alive = httpx.get(f"{server.url}/readyz").status_code == 200
    server_errors = sum(n for status, n in counts.items() if status.startswith("5"))
    print(f"server-side count: {sum(counts.values()):.0f} requests by status {counts}")
    for problem in problems[:50]:
        print("PROBLEM", problem[:400])
    verdicts = {
        "schemathesis found nothing": schemathesis_status == 0,
        "every corpus and mutation answer as expected": not problems,
        "no 5xx counted by the server": server_errors == 0,
        "server still ready": alive,
    }
    for verdict, ok in verdicts.items():
        print(f"{'PASS' if ok else 'FAIL'}  {verdict}")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
