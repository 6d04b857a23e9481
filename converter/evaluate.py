"""Accuracy and per-image costs of ANN, TSC and rate-coded runs of one network on a labelled set."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from converter.progress import steps
from converter.snn.engines import ENGINES
from converter.snn.network import SpikingNetwork
from converter.snn.results import RunResult
from converter.training.datasets import to_float


def _batches(images: Tensor, labels: Tensor, batch_size: int, desc: str) -> Iterator[tuple[Tensor, Tensor]]:
    starts = range(0, images.shape[0], batch_size)
    for s in steps(starts, f"evaluation ({desc}) on {images.shape[0]} images"):
        yield to_float(images[s : s + batch_size]), labels[s : s + batch_size]


class _Tally:
    """Running sums of a sequence of RunResults: accuracy and mean counts, totals and per layer."""

    def __init__(self) -> None:
        self.n = self.correct = 0
        self.hits: list[Tensor] = []
        self.sums: dict[str, float] = {}
        self.layers: dict[str, dict[str, float]] = {}
        self.last: RunResult | None = None

    def add(self, res: RunResult, labels: Tensor) -> None:
        self.n += labels.numel()
        hit = res.logits.argmax(1) == labels
        self.hits.append(hit)
        self.correct += int(hit.sum())
        self.last = res
        if res.engine == "ann":
            return
        for key in ("spikes", "synaptic_additions"):
            self.sums[key] = self.sums.get(key, 0.0) + float(getattr(res, key).double().sum())
        for layer in res.layers:
            row = self.layers.setdefault(
                layer.name,
                {"kind": layer.kind, "neurons": layer.neurons, "spikes": 0.0, "synaptic_additions": 0.0},
            )
            row["spikes"] += float(layer.spikes.double().sum())
            row["synaptic_additions"] += float(layer.synaptic_additions.double().sum())

    def summary(self) -> dict:
        res = self.last
        assert res is not None
        out = {
            "engine": res.engine,
            "images": self.n,
            "accuracy": self.correct / max(1, self.n),
            "timesteps": res.timesteps,
            "ann_macs": res.ann_macs,
        }
        if res.engine != "ann":
            mean = {k: v / self.n for k, v in self.sums.items()}
            out.update(
                spikes=mean["spikes"],
                synaptic_additions=mean["synaptic_additions"],
                memory_accesses=mean["synaptic_additions"],
                neuron_updates=res.neuron_updates,
                layers=[
                    {
                        "name": k,
                        **{
                            f: (v / self.n if f in ("spikes", "synaptic_additions") else v)
                            for f, v in row.items()
                        },
                    }
                    for k, row in self.layers.items()
                ],
            )
        return out


def evaluate(
    net: SpikingNetwork,
    images: Tensor,
    labels: Tensor,
    *,
    engines: tuple[str, ...] = ("ann", "fast"),
    rate_steps: tuple[int, ...] = (),
    rate_images: int | None = None,
    rate_v0: tuple[float, ...] = (0.0,),
    batch_size: int = 250,
    precision: str = "float64",
) -> dict:
    """Evaluate ``net`` computing in ``precision`` on uint8 ``images`` [N, C, H, W].

    Rate coding runs on the first ``rate_images`` only.
    """
    net = net.to(getattr(torch, precision))
    report: dict = {
        "precision": precision,
        "T": net.T,
        "uniform": net.uniform,
        "windows": net.windows,
        "shift": net.shift,
        "calibration": net.calibration.get("method"),
        "weights": net.calibration.get("weights", "as trained"),  # "reconstructed": the ANN is not the source
    }
    tallies_hits: dict[str, Tensor] = {}
    for engine in engines:
        tally = _Tally()
        for x, y in _batches(images, labels, batch_size, engine):
            tally.add(net.run(x, engine), y)
        key = "tsc" if ENGINES[engine].coding == "tsc" else engine
        report[key] = tally.summary()
        tallies_hits[key] = torch.cat(tally.hits)
    # rate coding costs T_rate forward passes per image: it runs on a reproducible class-mixed subset, and
    # the ANN and TSC accuracies on that same subset are reported for like-for-like comparisons
    n = min(rate_images or images.shape[0], images.shape[0])
    pick = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))[:n]
    for key, hits in tallies_hits.items():
        report[key]["accuracy_on_rate_subset"] = float(hits[pick].double().mean())
    if rate_steps:
        report["rate"] = []
        for v0 in rate_v0:  # one simulation per initial potential, read out at every T_rate
            tallies = {s: _Tally() for s in rate_steps}
            for x, y in _batches(images[pick], labels[pick], batch_size, f"rate v0={v0:g}"):
                for res in net.run_rate(x, list(rate_steps), v0):
                    tallies[res.timesteps].add(res, y)
            report["rate"] += [{**tallies[s].summary(), "v0": v0} for s in sorted(rate_steps)]
    return report
