"""The project installs like a library: a wheel with its packages, the page files, the tsc-snn command."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from service import __version__
from tsc_snn.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def test_the_command_dispatches_and_knows_its_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0 and capsys.readouterr().out == f"tsc-snn {__version__}\n"
    assert main([]) == 2 and "convert, evaluate, sweep, train" in capsys.readouterr().out
    assert main(["convert", "--help"]) == 0 and "--calibration-images" in capsys.readouterr().out


def test_a_wheel_holds_the_packages_the_page_and_the_command(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: the build writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("converter", "service", "tsc_snn"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", "out"]
    subprocess.run([*build, str(source)], check=True, cwd=tmp_path, timeout=300, capture_output=True)
    (wheel,) = (tmp_path / "out").glob("tsc_snn-*.whl")
    assert wheel.name.startswith(f"tsc_snn-{__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("converter/snn/network.py", "service/static/index.html", "service/static/page.js"):
        assert needed in names, needed
    assert not any(n.startswith(("tests/", "models/", "benchmarks/")) for n in names)
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    assert "tsc-snn = tsc_snn.__main__:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
