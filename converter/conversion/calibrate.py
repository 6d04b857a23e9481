"""Threshold balancing (spec section 5): choose each neuron layer's ``lam`` from calibration activations.

Methods: ``max`` (largest activation), ``percentile`` (e.g. 99.9 / 99.99 of the positive activations),
``search`` (the ``lam`` that minimises the layer's own clip-and-quantise error at its window ``T_l`` and
shift), ``error-aware`` (``error_aware``: layer by layer on the quantised outputs of the
layers before, with bias correction) and ``reconstruct`` (``reconstruct``: error-aware, then weights,
thresholds and corrections tuned block by block to reproduce the ANN's block outputs). Each can be per
layer or per channel. The report gives, per layer, ``lam`` and the fraction of positive calibration
activations above it (clipped). With ``a`` the ANN's activations of a layer (or channel) on the
calibration images:

    max:         lam = max(a)
    percentile:  lam = P_p({a > 0})
    search:      lam = argmin_{lam in grid} sum (a - q(a; lam))^2
                 q(a; lam) = lam * clip(floor(T a / lam + s), 0, T) / T
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from converter.snn.engines import ann
from converter.snn.graph import Graph
from converter.snn.quantise import levels

METHODS = ("max", "percentile", "search", "error-aware", "reconstruct")
SAMPLES_PER_LAYER = 4_000_000
SEARCH_GRID = 96


@dataclass(frozen=True)
class Calibration:
    """How thresholds are chosen."""

    method: str = "percentile"
    percentile: float = 99.99
    per_channel: bool = False
    bias_correction: bool = True  # error-aware and reconstruct only

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"unknown calibration method {self.method!r}; choose one of {', '.join(METHODS)}"
            )
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")

    def describe(self) -> str:
        """Short human-readable name, e.g. ``percentile 99.99 per-channel``."""
        base = f"percentile {self.percentile:g}" if self.method == "percentile" else self.method
        if self.method in ("error-aware", "reconstruct") and self.bias_correction:
            base += " + bias correction"
        return base + (" per-channel" if self.per_channel else "")


class _Samples:
    """A bounded random sample of one layer's activations, channels first ``[C, k]``, and exact maxima."""

    def __init__(self, quota: int) -> None:
        self.quota = quota
        self.parts: list[Tensor] = []
        self.max: Tensor | None = None

    def add(self, act: Tensor, gen: torch.Generator) -> None:
        cols = act.transpose(0, 1).reshape(act.shape[1], -1)
        m = cols.amax(1).double()
        self.max = m if self.max is None else torch.maximum(self.max, m)
        if cols.shape[1] > self.quota:
            cols = cols[:, torch.randperm(cols.shape[1], generator=gen)[: self.quota]]
        self.parts.append(cols.double())

    def values(self) -> Tensor:
        return torch.cat(self.parts, 1)


def _quant_error(a: Tensor, lam: Tensor, T: int, shift: float) -> Tensor:
    """Summed squared clip-and-quantise error of activations ``a`` [..., k] at thresholds ``lam``."""
    q = levels(a, T / lam, T, shift) * (lam / T)
    return ((a - q) ** 2).sum(-1)


def choose(values: Tensor, vmax: Tensor, cal: Calibration, T: int, shift: float) -> Tensor:
    """Threshold per row of ``values`` ([rows, k], zeros included) with ``vmax`` [rows]."""
    lams = []
    for row, top in zip(values, vmax, strict=True):
        pos = row[row > 0]
        if pos.numel() == 0 or top <= 0:
            lams.append(torch.tensor(1.0, dtype=torch.float64))
        elif cal.method == "max":
            lams.append(top)
        elif cal.method == "percentile":
            k = max(1, math.ceil(cal.percentile / 100 * pos.numel()))
            lams.append(pos.kthvalue(k).values)
        else:
            grid = top * torch.linspace(1.0 / SEARCH_GRID, 1.0, SEARCH_GRID, dtype=torch.float64)
            sub = pos[torch.randperm(pos.numel())[:200_000]]
            errors = torch.stack([_quant_error(sub, g, T, shift) for g in grid])
            lams.append(grid[errors.argmin()])
    return torch.stack(lams)


def calibrate(
    graph: Graph,
    images: Tensor,
    cal: Calibration,
    windows: dict[str, int],
    shift: float,
    batch_size: int = 128,
    skip: frozenset[str] = frozenset(),
) -> tuple[dict[str, Tensor], dict[str, dict]]:
    """Thresholds by neuron layer (scalar, or ``[C]`` per channel) and a per-layer report."""
    gen = torch.Generator().manual_seed(0)
    batches = max(1, math.ceil(images.shape[0] / batch_size))
    samples = {
        p.name: _Samples(max(1, SAMPLES_PER_LAYER // (p.shape[0] * batches)))
        for p in graph.neurons
        if p.name not in skip
    }

    def collect(name: str, act: Tensor) -> None:
        if name in samples:
            samples[name].add(act, gen)

    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            ann.forward(graph, images[start : start + batch_size].float(), collect)
    lams: dict[str, Tensor] = {}
    report: dict[str, dict] = {}
    for name, s in samples.items():
        values, T = s.values(), windows[name]
        if cal.per_channel:
            lam = choose(values, s.max, cal, T, shift)
        else:
            lam = choose(values.reshape(1, -1), s.max.max().reshape(1), cal, T, shift)[0]
        lams[name] = lam.float()
        pos = values[values > 0]
        clipped = (values > lam.view(-1, 1) if lam.dim() else values > lam)[values > 0]
        report[name] = {
            "lam": lam.tolist(),
            "max": float(s.max.max()),
            "clipped_fraction": float(clipped.double().mean()) if pos.numel() else 0.0,
        }
    return lams, report
