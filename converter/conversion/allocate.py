"""Window allocation: per-layer windows ``T_l`` with the fewest total timesteps within an accuracy budget.

Latency is the sum of windows along the longest path (``converter.snn.windows``), so every step cut from a
window on that path is a step saved. The search, on held-out images with labels:

1. **Uniform**: the smallest level ``T`` (same in every layer) whose accuracy is within ``max_drop``
   points of the ANN's (thresholds recalibrated at each ``T`` tried).
2. **Sensitivity**: from there, each layer alone is lowered to each smaller level and the mean squared
   error of the logits against the ANN's is measured (a smooth proxy; accuracy on a few hundred images is
   too coarse to rank single layers).
3. **Greedy path**: single-level cuts are ordered by error added per timestep saved (each layer's cuts in
   order, as a mixed-precision bit allocation does), giving a chain of ever shorter configurations.
4. **Budget**: a bisection along the chain finds the shortest configuration whose measured accuracy is
   still within ``max_drop``. Steps 2-4 repeat from the new configuration while they shorten it.
5. **Final**: thresholds are recalibrated at the chosen windows and kept if still within the budget.

The report (stored in the manifest) lists every configuration measured, the windows chosen and the cost.

**Fixed latency** (``windows_for_total``, to compare at the paper's 64/128/256/512 steps): with ``D``
windows on the longest path, every window gets ``b = floor(total / D)`` steps and the ``total - D*b``
spare steps go, one each, to the layers whose logit error (against the ANN, held-out images, thresholds
calibrated at ``b``) falls most when that layer alone gets ``b + 1``; thresholds are then recalibrated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from converter.snn.windows import Schedule, uniform, windows_on_longest_path

if TYPE_CHECKING:
    from converter.snn.graph import Graph
    from converter.snn.network import SpikingNetwork

LEVELS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64)
SENSITIVITY_IMAGES = 256
PASSES = 2


@dataclass
class _Holdout:
    """Held-out images with labels, the ANN's logits on them, and every evaluation made."""

    images: Tensor
    labels: Tensor
    batch_size: int
    ann_logits: Tensor = field(init=False)
    ann_accuracy: float = field(init=False)
    log: list[dict[str, Any]] = field(default_factory=list)

    def reference(self, net: SpikingNetwork) -> None:
        """The ANN's logits and accuracy: the budget is measured against them."""
        self.ann_logits = self._logits(net, "ann", self.images)
        self.ann_accuracy = float((self.ann_logits.argmax(1) == self.labels).double().mean())

    def _logits(self, net: SpikingNetwork, engine: str, images: Tensor) -> Tensor:
        step = self.batch_size
        parts = [net.run(images[i : i + step], engine).logits for i in range(0, len(images), step)]
        return torch.cat(parts).double()

    def accuracy(self, net: SpikingNetwork, stage: str) -> float:
        """TSC accuracy of ``net`` on all held-out images (logged with its windows and latency)."""
        acc = float((self._logits(net, "fast", self.images).argmax(1) == self.labels).double().mean())
        self.log.append({"stage": stage, "timesteps": net.timesteps, "accuracy": acc, "windows": net.windows})
        return acc

    def logit_error(self, net: SpikingNetwork) -> float:
        """Mean squared error of TSC logits against the ANN's on the sensitivity subset."""
        n = min(SENSITIVITY_IMAGES, len(self.images))
        diff = self._logits(net, "fast", self.images[:n]) - self.ann_logits[:n]
        return float(diff.pow(2).mean())


def _lower(level: int) -> int | None:
    """The next smaller level, or None below the smallest."""
    smaller = [v for v in LEVELS if v < level]
    return smaller[-1] if smaller else None


def _chain(net: SpikingNetwork, hold: _Holdout) -> list[dict[str, int]]:
    """Ever shorter window configurations from ``net.windows``, cheapest error per saved step first."""
    base_error = hold.logit_error(net)
    cuts: dict[str, list[tuple[int, float]]] = {}  # layer -> [(level, error with only this layer there)]
    for name, level in net.windows.items():
        cuts[name] = []
        lower = _lower(level)
        while lower is not None and lower >= max(1, net.windows[name] // 4):
            cuts[name].append((lower, hold.logit_error(net.with_windows({**net.windows, name: lower}))))
            lower = _lower(lower)
    windows, done = dict(net.windows), dict.fromkeys(cuts, 0)
    previous = {name: base_error for name in cuts}
    chain = []
    while True:
        best, best_score = None, None
        total = Schedule.build(net.graph, windows).total
        for name, options in cuts.items():
            if done[name] >= len(options):
                continue
            level, error = options[done[name]]
            saved = total - Schedule.build(net.graph, {**windows, name: level}).total
            if saved <= 0:
                continue
            score = max(error - previous[name], 0.0) / saved
            if best_score is None or score < best_score:
                best, best_score = name, score
        if best is None:
            return chain
        level, error = cuts[best][done[best]]
        windows[best], previous[best] = level, error
        done[best] += 1
        chain.append(dict(windows))


def allocate_windows(
    graph: Graph,
    images: Tensor,
    labels: Tensor,
    *,
    max_drop: float,
    calibrated: Callable[[dict[str, int]], SpikingNetwork],
    max_T: int = 32,
    batch_size: int = 500,
) -> tuple[SpikingNetwork, dict[str, Any]]:
    """Per-layer windows minimising total timesteps with TSC accuracy within ``max_drop`` points of the ANN.

    ``calibrated(windows)`` returns the network with thresholds calibrated for those windows.
    """
    start = time.perf_counter()
    hold = _Holdout(images, labels, batch_size)
    levels = sorted({v for v in LEVELS if v < max_T} | {max_T})
    tried: dict[int, tuple[SpikingNetwork, float]] = {}  # uniform level -> (calibrated net, accuracy)
    best, accuracy, budget = None, 0.0, 0.0
    lo, hi = 0, len(levels) - 1  # bisection for the smallest uniform level within the budget
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = calibrated(uniform(graph, levels[mid]))
        if not hold.log:  # the ANN does not depend on the calibration: its reference is taken once
            hold.reference(candidate)
            budget = hold.ann_accuracy - max_drop / 100
        acc = hold.accuracy(candidate, f"uniform T={levels[mid]}")
        tried[levels[mid]] = (candidate, acc)
        if acc >= budget:
            best, accuracy, hi = candidate, acc, mid - 1
        else:
            lo = mid + 1
    reached = best is not None
    if best is None:  # every level failed, the largest included: it is the answer, already measured
        best, accuracy = tried[levels[-1]]
    else:
        for n in range(PASSES):
            chain = _chain(best, hold)
            lo, hi, found = 0, len(chain) - 1, None
            while lo <= hi:
                mid = (lo + hi) // 2
                candidate = best.with_windows(chain[mid])
                acc = hold.accuracy(candidate, f"greedy pass {n + 1}, cut {mid + 1} of {len(chain)}")
                if acc >= budget:
                    found, lo = (candidate, acc), mid + 1
                else:
                    hi = mid - 1
            if found is None:
                break
            best, accuracy = found
        if len(set(best.windows.values())) > 1:  # uniform windows were calibrated for themselves already
            final = calibrated(best.windows)
            acc = hold.accuracy(final, "recalibrated at the chosen windows")
            if acc >= min(accuracy, budget):
                best, accuracy = final, acc
    report = {
        "max_drop_points": max_drop,
        "max_T": max_T,
        "levels": levels,
        "holdout_images": len(images),
        "ann_accuracy": hold.ann_accuracy,
        "accuracy": accuracy,
        "within_budget": reached,
        "windows": best.windows,
        "timesteps": best.timesteps,
        "evaluations": hold.log,
        "seconds": round(time.perf_counter() - start, 1),
    }
    return best, report


def windows_for_total(
    graph: Graph,
    images: Tensor,
    labels: Tensor,
    *,
    total: int,
    calibrated: Callable[[dict[str, int]], SpikingNetwork],
    batch_size: int = 500,
) -> tuple[SpikingNetwork, dict[str, Any]]:
    """Per-layer windows with a latency of exactly ``total`` steps, spare steps where they help most."""
    start = time.perf_counter()
    depth = windows_on_longest_path(graph)
    if total < depth:
        raise ValueError(
            f"a latency of {total} steps is less than one step for each of the {depth} windows "
            "on the longest path"
        )
    base = total // depth
    windows = uniform(graph, base)
    net = calibrated(windows)
    hold = _Holdout(images, labels, batch_size)
    hold.reference(net)
    gains: dict[str, float] = {}
    if net.timesteps < total:
        error = hold.logit_error(net)
        gains = {n: error - hold.logit_error(net.with_windows({**windows, n: base + 1})) for n in windows}
        for name in sorted(gains, key=gains.__getitem__, reverse=True):
            trial = {**windows, name: base + 1}
            if Schedule.build(graph, trial).total <= total:
                windows = trial
        net = calibrated(windows)
    accuracy = hold.accuracy(net, f"latency {total}")
    report = {
        "target_timesteps": total,
        "base_window": base,
        "holdout_images": len(images),
        "ann_accuracy": hold.ann_accuracy,
        "accuracy": accuracy,
        "logit_error_gain": gains,
        "windows": net.windows,
        "timesteps": net.timesteps,
        "seconds": round(time.perf_counter() - start, 1),
    }
    return net, report
