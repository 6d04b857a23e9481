"""benchmarks.abuse in its quick configuration: every attack runs against real servers and passes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.abuse import OWN_SERVER
from benchmarks.abuse_attacks import ATTACKS, scan_bomb
from benchmarks.harness import REPO


def test_the_scan_bomb_is_a_progressive_jpeg_of_thousands_of_scans() -> None:
    bomb = scan_bomb((640, 480), total_bytes=2**20)
    assert bomb.startswith(b"\xff\xd8") and bomb.endswith(b"\xff\xd9")
    assert 2**20 - 100 < len(bomb) <= 2**20 and bomb.count(b"\xff\xda") > 10_000


@pytest.mark.slow  # two real servers: about 30 s alone, two minutes beside the suite
def test_the_quick_run_attacks_and_passes_every_check(tmp_path: Path) -> None:
    out = tmp_path / "abuse.json"
    # the bystander's p50 limit is loose: the suite runs beside this test on every core
    command = [
        sys.executable,
        "-m",
        "benchmarks.abuse",
        "--quick",
        "--p50-limit-ms",
        "2000",
        "--json",
        str(out),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-6000:]
    results = {r["attack"]: r for r in json.loads(out.read_text())}
    assert list(results) == [OWN_SERVER[0], *ATTACKS, OWN_SERVER[1]]
    for name, result in results.items():
        assert result["tried"] and result["answers"] and result["checks"], name
        assert all(result["checks"].values()), (name, result["checks"])
    for name in ATTACKS:  # measured while they ran
        assert 50 < results[name]["rss_peak_mib"] < 2048, name
        assert results[name]["bystander"]["requests"] > 0, name
    assert {"408 request_timeout", "503 overloaded"} <= set(results["trickle"]["answers"])
    assert {"408", "503"} <= set(results["body-budget"]["answers"])  # some held, the rest refused
    assert results["shutdown"]["answers"]["batch"] == "503"
