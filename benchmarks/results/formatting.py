"""How numbers and windows read in the report's tables and plot legends."""

from __future__ import annotations

from typing import Any


def pct(x: float | None) -> str:
    """An accuracy fraction as a percentage with two decimals, ``-`` when unknown."""
    return "-" if x is None else f"{100 * x:.2f}"


def num(x: float) -> str:
    """A count with thousands separators and no decimals."""
    return f"{x:,.0f}"


def windows(run: dict[str, Any]) -> str:
    """``16`` for uniform windows, ``auto: 3-12 (input 8)`` for allocated ones."""
    w = run.get("windows") or {"input": run["T"]}
    values = set(w.values())
    if len(values) == 1:
        return str(values.pop())
    kind = "auto" if "allocation" in run else "mixed"
    return f"{kind}: {min(values)}-{max(values)} (input {w['input']})"


def method(run: dict[str, Any], allocation: str = " + allocation") -> str:
    """A TSC run's calibration, with ``allocation`` appended when its windows were allocated."""
    return run["calibration"] + (allocation if "allocation" in run else "")
