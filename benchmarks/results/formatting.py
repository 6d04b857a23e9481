"""How numbers and windows read in the report's tables and plot legends."""

from __future__ import annotations

from typing import Any


def pct(x: float | None) -> str:
    """An accuracy fraction as a percentage with two decimals, ``-`` when unknown."""
    return "-" if x is None else f"{100 * x:.2f}"


def num(x: float) -> str:
    """A count with thousands separators and no decimals."""
    return f"{x:,.0f}"


def fixed_latency(run: dict[str, Any]) -> int | None:
    """The latency a run's windows were chosen for (``T=latency:N``), else None."""
    return run.get("allocation", {}).get("target_timesteps")


def windows(run: dict[str, Any]) -> str:
    """``16`` for uniform windows, ``auto: 3-12 (input 8)`` for allocated ones."""
    w = run.get("windows") or {"input": run["T"]}
    values = set(w.values())
    if len(values) == 1:
        return str(values.pop())
    kind = "mixed" if "allocation" not in run else "latency" if fixed_latency(run) else "auto"
    return f"{kind}: {min(values)}-{max(values)} (input {w['input']})"


def method(run: dict[str, Any], allocation: str = " + allocation") -> str:
    """A TSC run's calibration, with ``allocation`` appended when its windows were allocated."""
    if fixed_latency(run):
        return f"{run['calibration']} + windows for the latency"
    return run["calibration"] + (allocation if "allocation" in run else "")
