"""Stages: a bar on a terminal, one line otherwise, nothing from a stage inside another or when quiet."""

from __future__ import annotations

import io
import sys

import pytest

from converter.progress import reporting, stage, steps


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_stage_is_one_line_and_a_stage_inside_it_says_nothing(capsys):
    with reporting():
        with stage("outer"):
            assert list(steps(range(3), "inner")) == [0, 1, 2]
        assert list(steps([4, 5], "second")) == [4, 5]
    assert capsys.readouterr().err == "outer\nsecond\n"


def test_on_a_terminal_a_stage_is_a_bar_and_quiet_silences_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "stderr", terminal := Terminal())
    with reporting():
        assert list(steps(range(3), "counting")) == [0, 1, 2]
    written = terminal.getvalue()
    assert "counting: 0%| | 0/3" in " ".join(written.split()) and "counting\n" not in written
    monkeypatch.setattr(sys, "stderr", quiet := Terminal())
    with reporting(quiet=True):
        assert list(steps(range(3), "counting")) == [0, 1, 2]
    assert quiet.getvalue() == ""
