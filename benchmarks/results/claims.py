"""The comparisons behind the paper's claims, computed from a sweep report: which runs match which."""

from __future__ import annotations

from typing import Any

Run = dict[str, Any]


def rate_runs(report: dict[str, Any]) -> list[Run]:
    """The rate-coded runs of a report, shortest first."""
    return sorted(report.get("rate", []), key=lambda r: r["timesteps"])


def equal_accuracy(report: dict[str, Any]) -> list[tuple[Run, Run | None]]:
    """Each TSC run measured on the rate images with the shortest rate run at least as accurate there."""
    rate = rate_runs(report)
    return [
        (r, next((q for q in rate if q["accuracy"] >= r["tsc"]["accuracy_on_rate_subset"]), None))
        for r in report["runs"]
        if "accuracy_on_rate_subset" in r["tsc"]
    ]


def equal_accuracy_ratios(report: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Rate/TSC additions and rate/TSC timesteps of every TSC run matched at equal accuracy."""
    pairs = [(r, q) for r, q in equal_accuracy(report) if q is not None]
    additions = [q["synaptic_additions"] / r["tsc"]["synaptic_additions"] for r, q in pairs]
    timesteps = [q["timesteps"] / r["tsc"]["timesteps"] for r, q in pairs]
    return additions, timesteps


def closest_to_ann(report: dict[str, Any], points: float = 0.5) -> Run | None:
    """The shortest TSC run within ``points`` of the ANN's accuracy on all test images."""
    ann = report["ann"]["accuracy"]
    return min(
        (r for r in report["runs"] if r["tsc"]["accuracy"] >= ann - points / 100),
        key=lambda r: r["tsc"]["timesteps"],
        default=None,
    )


def best_rate(report: dict[str, Any]) -> Run:
    """The most accurate rate-coded run, the shortest among ties."""
    return max(report["rate"], key=lambda r: (r["accuracy"], -r["timesteps"]))


def as_good_as(report: dict[str, Any], rate: Run) -> Run | None:
    """The shortest TSC run within one image of a rate run's accuracy on the same images."""
    # one image is the resolution of an accuracy on n images: "as good as" allows one image less
    floor = rate["accuracy"] - 1.001 / rate["images"]
    return min(
        (r for r, _ in equal_accuracy(report) if r["tsc"]["accuracy_on_rate_subset"] >= floor),
        key=lambda r: r["tsc"]["timesteps"],
        default=None,
    )
