"""A short run of benchmarks/fuzz.py in CI: schemathesis plus hostile and mutated images, zero 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fuzzing_finds_nothing(model_dir: Path) -> None:
    pytest.importorskip("schemathesis")
    command = [sys.executable, "-m", "benchmarks.fuzz", "--model-dir", str(model_dir)]
    command += ["--examples", "15", "--mutations", "300"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
