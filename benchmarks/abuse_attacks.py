"""The attacks of ``benchmarks.abuse`` on a running server, and the hostile files they send.

Each takes the target and the parsed arguments and returns what it tried, the answers by outcome and its
checks; ``benchmarks.abuse`` measures the server's memory and a bystander around it.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import zlib
from collections import Counter

import httpx
from PIL import Image

from benchmarks.abuse_tools import MiB, Reply, Target, exchange, head, png, server_cpu_s
from benchmarks.fuzz import encoded, gif_declaring, png_declaring


def jpeg(size: tuple[int, int], **params: object) -> bytes:
    """A flat-coloured JPEG of ``size``."""
    return encoded(Image.new("RGB", size, (90, 140, 200)), "JPEG", **params)


def scan_bomb(size: tuple[int, int], total_bytes: int = MiB) -> bytes:
    """A progressive JPEG of ``size`` whose last scan (its smallest) is repeated until ``total_bytes``."""
    data = jpeg(size, progressive=True)
    last = data.rindex(b"\xff\xda")
    scan = data[last:-2]
    return data[:-2] + scan * max(1, (total_bytes - len(data)) // len(scan)) + data[-2:]


def sof_declaring(width: int, height: int) -> bytes:
    """A small baseline JPEG whose frame header claims ``width`` x ``height``."""
    data = bytearray(jpeg((16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def client(target: Target, source: str, timeout_s: float = 120) -> httpx.AsyncClient:
    """An authenticated client connecting from ``source``."""
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return httpx.AsyncClient(
        base_url=target.url, transport=transport, headers=target.headers, timeout=timeout_s
    )


async def post_images(target: Target, args: argparse.Namespace, cases: list[tuple[str, bytes, int]]) -> list:
    """POST each (name, bytes, expected status) to /classify, 4 at a time; (name, expected, status, s)."""
    gate, done = asyncio.Semaphore(4), []
    async with client(target, args.attacker) as http:

        async def one(name: str, data: bytes, expected: int) -> None:
            async with gate:
                started = time.perf_counter()
                answer = await http.post("/classify", files={"file": (name, data)})
                done.append((name, expected, answer.status_code, time.perf_counter() - started))

        await asyncio.gather(*(one(*case) for case in cases))
    return done


async def decode_bombs(target: Target, args: argparse.Namespace) -> dict:
    """Progressive JPEGs whose smallest scan repeats thousands of times, from several clients at once."""
    bomb = scan_bomb(args.bomb_size)
    cases = [(f"bomb-{i}.jpg", bomb, 413) for i in range(args.bomb_clients)]
    done = await post_images(target, args, cases)
    scans = bomb.count(b"\xff\xda")
    return {
        "tried": f"{len(cases)} scan bombs: {args.bomb_size[0]}x{args.bomb_size[1]} progressive JPEG, "
        f"{len(bomb) / MiB:.2f} MiB, {scans} scans",
        "answers": Counter(str(status) for _, _, status, _ in done),
        "checks": {
            "every scan bomb refused with 413": all(s == e for _, e, s, _ in done),
            "each refused within 2 s": max(t for *_, t in done) < 2,
        },
    }


async def large_images(target: Target, args: argparse.Namespace) -> dict:
    """Valid large JPEGs (baseline and progressive), pixel bombs and valid images of random sizes."""
    w, h = args.large_size
    rng = random.Random(args.seed)
    cases = [(f"large-{i}.jpg", jpeg((w, h), progressive=i % 2 == 1), 200) for i in range(4)]
    cases += [
        ("20000x20000-header.png", png_declaring(20000, 20000), 413),
        ("bomb-12000x12000.png", png_declaring(12000, 12000, zlib.compress(b"\0" * 12001 * 12000, 9)), 413),
        ("65535x65535-header.gif", gif_declaring(65535, 65535), 413),
        ("10000x10000-header.jpg", sof_declaring(10000, 10000), 413),
        ("49x49.png", png((49, 49)), 200),
        ("98x98.jpg", jpeg((98, 98)), 200),
    ]
    for i in range(args.sizes):
        size = (rng.randint(32, 2000), rng.randint(32, 2000))
        cases += [(f"random-{i}.png", png(size), 200), (f"random-{i}.jpg", jpeg(size), 200)]
    done = await post_images(target, args, cases)
    wrong = [f"{name}: {status}" for name, expected, status, _ in done if status != expected]
    return {
        "tried": f"4 valid {w}x{h} JPEGs (2 progressive), 4 pixel bombs, {2 * args.sizes + 2} small images",
        "answers": Counter(str(status) for _, _, status, _ in done),
        "checks": {"valid images answered 200, bombs 413": not wrong},
        "notes": wrong,
    }


def outcomes(replies: list[Reply]) -> Counter:
    """How many replies of each outcome."""
    return Counter(r.outcome for r in replies)


async def body_budget(target: Target, args: argparse.Namespace) -> dict:
    """Connections declaring the largest JSON body, sending all of it but its last byte, then stalling."""
    length, path = args.upload_bytes, f"/v2/models/{args.model}/infer"
    prefix = b'{"inputs": [{"name": "pixels", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": ['
    body = (prefix + b"0.5, " * (length // 5))[: length - 1]
    request = head("POST", path, {**target.headers, "Content-Type": "application/json"}, length)

    async def feed(writer: asyncio.StreamWriter) -> None:
        for start in range(0, len(body), 256 * 1024):
            writer.write(body[start : start + 256 * 1024])
            await writer.drain()

    timeout = args.body_timeout + 30
    replies = await asyncio.gather(
        *(exchange(target, args.attacker, request, feed, timeout) for _ in range(args.body_connections))
    )
    admitted = sum(r.status == 408 for r in replies)
    resets = sum(r.outcome == "reset" for r in replies)
    return {
        "tried": f"{args.body_connections} connections, each {length / MiB:g} MiB of JSON less a byte, "
        f"then stalled (budget {args.body_budget / MiB:g} MiB)",
        "answers": outcomes(replies),
        "checks": {
            "each answered 503 at once or 408 once stalled (or reset while still sending after a 503)": all(
                r.status in (408, 503) or r.outcome == "reset" for r in replies
            ),
            "bodies held at once within the budget": admitted <= args.body_budget // length,
        },
        "notes": [f"{resets} reset: the server closed after its 503 while their body was still coming"]
        if resets
        else [],
    }


async def anonymous_bodies(target: Target, args: argparse.Namespace) -> dict:
    """With TSC_API_KEY set, clients without it send the largest JSON body, over and over."""
    length, path = args.upload_bytes, f"/v2/models/{args.model}/infer"
    request = head("POST", path, {"Content-Type": "application/json"}, length)
    probe = await exchange(target, args.attacker, request, None, 10)  # headers only: no body byte sent
    body = b"[" + b"0" * (length - 1)

    async def feed(writer: asyncio.StreamWriter) -> None:
        for start in range(0, len(body), 256 * 1024):
            writer.write(body[start : start + 256 * 1024])
            await writer.drain()

    replies: list[Reply] = []
    cpu, own = server_cpu_s(target.pid), time.process_time()
    until = time.monotonic() + args.anon_seconds

    async def anonymous() -> None:
        while time.monotonic() < until:
            replies.append(await exchange(target, args.attacker, request, feed, 30))

    await asyncio.gather(*(anonymous() for _ in range(args.anon_clients)))
    cpu, own = server_cpu_s(target.pid) - cpu, time.process_time() - own
    return {
        "tried": f"{args.anon_clients} clients without the key sending {length / MiB:g} MiB bodies for "
        f"{args.anon_seconds:g} s ({len(replies)} requests, server CPU {cpu:.2f} s, "
        f"attackers' {own:.2f} s), and one "
        "sending headers only",
        "answers": outcomes([probe, *replies]),
        "checks": {
            "headers-only request refused 401 without waiting for its body": probe.status == 401
            and probe.seconds < 1,
            "every anonymous body refused 401 (or reset after it)": all(
                r.status == 401 or r.outcome == "reset" for r in replies
            ),
        },
    }


async def trickle(target: Target, args: argparse.Namespace) -> dict:
    """Many connections from one address, each sending its body a byte at a time."""
    upload = httpx.Request("POST", f"{target.url}/classify", files={"file": ("a.png", png())})
    body, length = upload.read(), len(upload.content)
    kind = upload.headers["Content-Type"]
    request = head("POST", "/classify", {**target.headers, "Content-Type": kind}, length)

    async def feed(writer: asyncio.StreamWriter) -> None:
        for i in range(length - 1):  # a valid multipart body, all but its last byte
            writer.write(body[i : i + 1])
            await writer.drain()
            await asyncio.sleep(args.trickle_interval)

    deadline = args.body_timeout + length / (16 * 1024)  # TSC_BODY_TIMEOUT_S + length / TSC_BODY_MIN_RATE
    replies = await asyncio.gather(
        *(exchange(target, args.attacker, request, feed, deadline + 30) for _ in range(args.trickle))
    )
    async with client(target, args.attacker) as http:
        after = (await http.post("/classify", files={"file": ("a.png", png())})).status_code
    refused = [r for r in replies if r.status != 408]
    resets = sum(r.outcome == "reset" for r in refused)
    return {
        "tried": f"{args.trickle} connections from {args.attacker}, each a byte of its {length}-byte body "
        f"every {args.trickle_interval:g} s (deadline {deadline:.1f} s)",
        "answers": outcomes(replies),
        "checks": {
            "trickles cut off with 408 by the body deadline": all(
                r.seconds < deadline + 5 for r in replies if r.status == 408
            )
            and any(r.status == 408 for r in replies),
            "the rest refused as JSON 503 (or reset: their bytes came after the close)": all(
                r.outcome in ("503 overloaded", "reset") for r in refused
            ),
            "slots reclaimed: the trickler's address is served again": after == 200,
        },
        "notes": [f"{resets} of {len(refused)} refusals reset, not answered"] if resets else [],
    }


async def flood(target: Target, args: argparse.Namespace) -> dict:
    """Idle connections opened as fast as possible from several addresses."""
    sources = [f"127.0.0.{10 + i}" for i in range(args.flood_addresses)]
    replies = await asyncio.gather(
        *(
            exchange(target, source, b"", None, args.header_timeout + 30)
            for source in sources
            for _ in range(args.flood_connections)
        )
    )
    held = [r for r in replies if r.outcome == "closed"]
    return {
        "tried": f"{args.flood_connections} idle connections from each of {len(sources)} addresses",
        "answers": outcomes(replies),
        "checks": {
            "idle connections closed by the header timeout": all(
                r.seconds < args.header_timeout + 5 for r in held
            ),
            "the rest refused as JSON 503, not resets": all(
                r.outcome in ("closed", "503 overloaded") for r in replies
            ),
        },
    }


ATTACKS = {
    "decode-bombs": decode_bombs,
    "large-images": large_images,
    "body-budget": body_budget,
    "anonymous-bodies": anonymous_bodies,
    "trickle": trickle,
    "flood": flood,
}
