"""Hostile clients against a real server: decode bombs, body floods, trickles, connection floods, anonymous
bodies, a failing default model and SIGTERM during a batch; each attack's peak RSS and a bystander's latency.

    python -m benchmarks.abuse                       # models/ served as the container serves them (minutes)
    python -m benchmarks.abuse --trickle 1100 --trickle-interval 20 --body-timeout 30   # the issue's pace
    python -m benchmarks.abuse --attacks trickle,flood --url http://127.0.0.1:8000 --pid PID --key KEY

The server runs ``python -m service`` with the container's settings but for those an attack's length
depends on (printed), TSC_API_KEY set and TSC_BODY_BUDGET_BYTES a quarter of --memory-limit (the
Kubernetes manifest's 2 GiB; the default reads the cgroup, absent outside the container). While each attack
runs, a bystander process posts a small PNG to /classify in a loop from another loopback address and the
server's VmRSS is sampled (VmHWM reset first). An attack passes when every answer is the expected one, the
peak RSS stays under --memory-limit and the bystander got 200 every time with a p50 under --p50-limit-ms.
Exit 0 when every check passes; --json writes the results. --url targets a server already running on this
host (readiness and shutdown, which need servers of their own, are skipped; --pid gives its RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.abuse_attacks import ATTACKS, client
from benchmarks.abuse_tools import MiB, PeakMemory, Target, bystander, latency, launch, png
from benchmarks.harness import REPO

OWN_SERVER = ("readiness", "shutdown")
QUICK = {  # seconds, not minutes: the test's run
    "bomb_size": (640, 480),
    "bomb_clients": 2,
    "large_size": (1200, 1000),
    "sizes": 2,
    "body_connections": 6,
    "upload_bytes": MiB,
    "body_budget": 3 * MiB,
    "anon_clients": 2,
    "anon_seconds": 1.0,
    "trickle": 24,
    "client_connections": 8,
    "trickle_interval": 0.3,
    "body_timeout": 1.0,
    "flood_addresses": 2,
    "flood_connections": 12,
    "header_timeout": 1.0,
    "shutdown_images": 8,
    "grace": 1.0,
}


def size(text: str) -> tuple[int, int]:
    """``WxH`` as a pair."""
    w, h = text.lower().split("x")
    return int(w), int(h)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--attacks", default=",".join([*ATTACKS, *OWN_SERVER]), help="comma-separated, in this order")
    add("--quick", action="store_true", help="tiny sizes and timeouts: a run of seconds (the test's)")
    add("--model-dir", type=Path, default=REPO / "models", help="TSC_MODEL_DIR (default: models/)")
    add("--model", default="resnet20-cifar10", help="the model requests name (the default model)")
    add("--url", help="attack this running server instead of starting one")
    add("--pid", type=int, help="with --url: the server's process id, for its RSS")
    add("--key", help="with --url: its TSC_API_KEY")
    add("--json", type=Path, help="write the results here")
    add("--memory-limit", type=int, default=2048 * MiB, help="RSS limit in bytes (deploy/k8s: 2 GiB)")
    add("--p50-limit-ms", type=float, default=100.0, help="the bystander's p50 limit")
    add("--attacker", default="127.0.0.1", help="source address of the attacks")
    add("--bystander", default="127.0.0.2", help="source address of the bystander")
    add("--bomb-size", type=size, default=(7200, 5500), help="scan bomb's pixels, WxH")
    add("--bomb-clients", type=int, default=4, help="scan bombs sent at once")
    add("--large-size", type=size, default=(7200, 5500), help="valid large JPEGs' pixels, WxH")
    add("--sizes", type=int, default=20, help="random-size PNGs and JPEGs (32 to 2000 px)")
    add("--body-connections", type=int, default=120, help="connections stalling with a full body")
    add("--upload-bytes", type=int, default=16 * MiB, help="TSC_MAX_UPLOAD_BYTES, each body's size")
    add("--body-budget", type=int, help="TSC_BODY_BUDGET_BYTES (default: a quarter of --memory-limit)")
    add("--anon-clients", type=int, default=6, help="clients sending bodies without the key")
    add("--anon-seconds", type=float, default=10.0, help="how long they send")
    add("--trickle", type=int, default=1100, help="trickling connections from one address")
    add("--trickle-interval", type=float, default=2.0, help="seconds between their bytes")
    add("--client-connections", type=int, help="TSC_MAX_CLIENT_CONNECTIONS (default: the server's)")
    add("--body-timeout", type=float, default=10.0, help="TSC_BODY_TIMEOUT_S (the container's: 30)")
    add("--flood-addresses", type=int, default=3, help="addresses the idle connections come from")
    add("--flood-connections", type=int, default=400, help="idle connections from each")
    add("--header-timeout", type=float, default=10.0, help="TSC_HEADER_TIMEOUT_S")
    add("--shutdown-images", type=int, default=16, help="images of the stepped batch SIGTERM interrupts")
    add("--grace", type=float, default=2.0, help="TSC_GRACEFUL_TIMEOUT_S (the container's: 30)")
    add("--seed", type=int, default=1)
    return p


def server_env(args: argparse.Namespace) -> dict[str, str]:
    """The TSC_* settings the attacks need on top of the container's."""
    env = {
        "TSC_BODY_BUDGET_BYTES": str(args.body_budget),
        "TSC_MAX_UPLOAD_BYTES": str(args.upload_bytes),
        "TSC_BODY_TIMEOUT_S": str(args.body_timeout),
        "TSC_HEADER_TIMEOUT_S": str(args.header_timeout),
        "TSC_GRACEFUL_TIMEOUT_S": str(args.grace),
        "TSC_LOG_LEVEL": "error",
    }
    if args.client_connections is not None:
        env["TSC_MAX_CLIENT_CONNECTIONS"] = str(args.client_connections)
    return env


def measured(target: Target, args: argparse.Namespace, name: str) -> dict:
    """Run attack ``name`` while a bystander posts and the server's memory is watched; its result."""
    with bystander(target, args.bystander) as seen, PeakMemory(target.pid) as memory:
        started = time.monotonic()
        result = asyncio.run(ATTACKS[name](target, args))
        result["seconds"] = time.monotonic() - started
    result["rss_peak_mib"], result["bystander"] = memory.mib, latency(seen)
    by = result["bystander"]
    if memory.mib is not None:
        result["checks"][f"RSS under {args.memory_limit / MiB:g} MiB"] = memory.mib * MiB < args.memory_limit
    result["checks"][f"bystander always 200, p50 under {args.p50_limit_ms:g} ms"] = (
        by["requests"] > 0 and by["not_200"] == 0 and by["p50_ms"] < args.p50_limit_ms
    )
    return result


def readiness(args: argparse.Namespace) -> dict:
    """TSC_DEFAULT_MODEL names a checkpoint that fails to load, beside one that loads."""
    with tempfile.TemporaryDirectory() as scratch:
        models = Path(scratch)
        (models / args.model).symlink_to((args.model_dir / args.model).resolve())
        (models / "broken").mkdir()
        (models / "broken" / "manifest.json").write_text("{ not a manifest")
        env = {**server_env(args), "TSC_DEFAULT_MODEL": "broken"}
        with launch(models, env, None) as target, httpx.Client(base_url=target.url, timeout=60) as http:
            picture = {"file": ("a.png", png())}
            answers = {
                "GET /readyz": http.get("/readyz").status_code,
                "GET /v2/health/ready": http.get("/v2/health/ready").status_code,
                "GET /livez": http.get("/livez").status_code,
                "POST /classify": http.post("/classify", files=picture).status_code,
                f"POST /classify?model={args.model}": http.post(
                    "/classify", params={"model": args.model}, files=picture
                ).status_code,
            }
            metrics = http.get("/metrics").text
    failures = next(
        (
            float(line.split()[1])
            for line in metrics.splitlines()
            if line.startswith("tsc_model_load_failures")
        ),
        0.0,
    )
    expected = {"GET /readyz": 503, "GET /v2/health/ready": 503, "GET /livez": 200, "POST /classify": 503}
    return {
        "tried": f"TSC_DEFAULT_MODEL=broken (a corrupt manifest) beside {args.model}",
        "answers": {**{k: str(v) for k, v in answers.items()}, "tsc_model_load_failures_total": failures},
        "checks": {
            "not ready, unnamed requests 503, named ones served": all(
                answers[k] == v for k, v in expected.items()
            )
            and answers[f"POST /classify?model={args.model}"] == 200,
            "the failed load is counted": failures >= 1,
        },
    }


async def _interrupted_batch(target: Target, args: argparse.Namespace) -> tuple[int, bool, float]:
    """SIGTERM while a stepped batch runs: (the batch's status, running at SIGTERM, seconds to exit)."""
    assert target.process is not None
    files = [("files", (f"{i}.png", png(color=(i * 9 % 256, 80, 160)))) for i in range(args.shutdown_images)]
    async with client(target, args.attacker) as http, client(target, "127.0.0.3", 5) as control:
        batch = asyncio.create_task(http.post("/classify/batch", files=files, params={"engine": "stepped"}))
        while "tsc_http_requests_in_flight 2.0" not in (await control.get("/metrics")).text:
            await asyncio.sleep(0.05)  # until the batch is in flight (beside this /metrics request)
        await asyncio.sleep(0.5)
        running = not batch.done()
        target.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.to_thread(target.process.wait, 120)
        exited = time.monotonic() - signalled
        try:
            status = (await batch).status_code
        except httpx.HTTPError:
            status = 0
    return status, running, exited


def shutdown(target: Target, args: argparse.Namespace) -> dict:
    """SIGTERM while a reference (stepped) batch runs, with a short grace period."""
    status, running, exited = asyncio.run(_interrupted_batch(target, args))
    return {
        "tried": f"SIGTERM during a stepped batch of {args.shutdown_images} images, grace {args.grace:g} s",
        "answers": {"batch": str(status), "exit_s": round(exited, 2)},
        "checks": {
            "the batch was running at SIGTERM": running,
            "the cut-off batch answered 503": status == 503,
            f"exit within grace + 5 s ({args.grace + 5:g} s)": exited <= args.grace + 5,
        },
    }


def report(result: dict) -> None:
    """Print one attack's result."""
    print(f"\n== {result['attack']}: {result['tried']}")
    print(f"   answers: {dict(result['answers'])}")
    if result.get("rss_peak_mib") is not None:
        print(f"   server RSS peak: {result['rss_peak_mib']:.0f} MiB")
    if result.get("bystander"):
        by = result["bystander"]
        print(
            f"   bystander: {by['requests']} requests, p50 {by['p50_ms']:.1f} ms, p95 {by['p95_ms']:.1f} ms, "
            f"statuses {by['statuses']}"
        )
    for note in result.get("notes", [])[:20]:
        print(f"   note: {note}")
    for check, ok in result["checks"].items():
        print(f"   {'PASS' if ok else 'FAIL'}  {check}")


def run(args: argparse.Namespace, names: list[str]) -> list[dict]:
    """Every attack of ``names``, each result as it comes."""
    results = []
    key = args.key if args.url else secrets.token_urlsafe(24)
    attacks = [n for n in names if n in ATTACKS or n == "shutdown"]

    def record(name: str, result: dict) -> None:
        results.append({"attack": name, **result})
        report(results[-1])

    if "readiness" in names and not args.url:
        record("readiness", readiness(args))
    if args.url:
        target = Target(args.url.rstrip("/"), key, args.pid)
        for name in (n for n in attacks if n in ATTACKS):
            record(name, measured(target, args, name))
        return results
    with launch(args.model_dir, server_env(args), key) as target:
        ready = httpx.get(f"{target.url}/readyz", timeout=10).json()
        print(f"server pid {target.pid} at {target.url}, default model {ready['default_model']}")
        for name in attacks:
            record(name, shutdown(target, args) if name == "shutdown" else measured(target, args, name))
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the attacks and report; 1 when any check fails."""
    args = parser().parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    args.body_budget = args.body_budget or args.memory_limit // 4
    names = [n for n in args.attacks.split(",") if n]
    unknown = set(names) - set(ATTACKS) - set(OWN_SERVER)
    if unknown:
        raise SystemExit(f"unknown attacks: {', '.join(sorted(unknown))}")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # thousands of connections at once
    resource.setrlimit(resource.RLIMIT_NOFILE, (65536 if hard == resource.RLIM_INFINITY else hard, hard))
    print(f"server settings beyond the container's: {server_env(args)} and TSC_API_KEY")
    started = time.monotonic()
    results = run(args, names)
    failed = [f"{r['attack']}: {c}" for r in results for c, ok in r["checks"].items() if not ok]
    print(f"\n{len(results)} attacks in {time.monotonic() - started:.0f} s; {len(failed)} checks failed")
    for failure in failed:
        print(f"FAIL {failure}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=dict))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
