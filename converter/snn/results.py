"""What an engine returns: logits and the operation counts of spec section 6, per image and per layer.

For one image and one population ``p``: ``spikes_p`` (spikes it emits), ``additions_p`` (synaptic
additions its spikes cause downstream, one per synapse per spike; each reads one weight, so memory
accesses equal additions) and ``updates_p`` (one addition per neuron per step it integrates or speaks,
the same for every image). ``RunResult`` holds them for a batch; ``ImageResult`` for one image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from converter.snn.energy import ann_energy_pj, snn_energy_pj

if TYPE_CHECKING:
    from converter.snn.graph import Kind, Population
    from converter.snn.raster import RasterLayer


class WeightReads:
    """``memory_accesses``: one weight read per synaptic addition (spec section 6), wherever it is counted."""

    synaptic_additions: Any

    @property
    def memory_accesses(self) -> Any:
        """Weight reads: one per synaptic addition."""
        return self.synaptic_additions


@dataclass(frozen=True)
class LayerCounts:
    """Counts of one population (input pixels, a neuron layer, a max-pool switch or the output layer)."""

    name: str
    kind: Kind
    neurons: int
    spikes: torch.Tensor  # [N] int64, spikes emitted by this population
    synaptic_additions: torch.Tensor  # [N] int64, additions its spikes cause downstream
    neuron_updates: int  # per image: one addition per neuron per step it integrates or speaks

    @classmethod
    def of(
        cls, p: Population, spikes: torch.Tensor, additions: torch.Tensor, neuron_updates: int
    ) -> LayerCounts:
        """Counts of population ``p``; ``additions`` may be float sums, rounded to whole additions here."""
        return cls(p.name, p.kind, p.size, spikes, additions.round().to(torch.int64), neuron_updates)


@dataclass(frozen=True)
class LayerImage(WeightReads):
    """One population's counts for one image."""

    name: str
    kind: Kind
    neurons: int
    spikes: int
    synaptic_additions: int
    neuron_updates: int


@dataclass(frozen=True)
class ImageResult(WeightReads):
    """One image's logits, class probabilities and operation counts from one engine (and its raster)."""

    engine: str
    logits: list[float]
    probabilities: list[float]
    timesteps: int
    spikes: int
    synaptic_additions: int
    neuron_updates: int
    ann_macs: int
    layers: list[LayerImage]
    raster: list[RasterLayer] | None = None  # TSC engines, when asked: the image's spike raster

    @property
    def energy_pj(self) -> float:
        """Energy estimate of this spiking inference: every synaptic and neuron-state addition."""
        return snn_energy_pj(self.synaptic_additions, self.neuron_updates)

    @property
    def ann_energy_pj(self) -> float:
        """Energy estimate of the ANN forward on the same image: its multiply-accumulates."""
        return ann_energy_pj(self.ann_macs)


@dataclass(frozen=True)
class RunResult(WeightReads):
    """Logits and per-image counts of one engine run over a batch."""

    engine: str  # a name of converter.snn.engines.ENGINES
    logits: torch.Tensor  # [N, classes]
    timesteps: int
    ann_macs: int
    layers: list[LayerCounts] = field(default_factory=list)
    durations: dict[str, torch.Tensor] | None = None  # TSC engines: d of every population, when asked

    @property
    def spikes(self) -> torch.Tensor:
        """Total spikes per image, [N] int64."""
        return self._total("spikes")

    @property
    def synaptic_additions(self) -> torch.Tensor:
        """Total synaptic additions per image, [N] int64."""
        return self._total("synaptic_additions")

    @property
    def neuron_updates(self) -> int:
        """Neuron-state additions per image (the same for every image)."""
        return sum(layer.neuron_updates for layer in self.layers)

    def _total(self, attr: str) -> torch.Tensor:
        total = torch.zeros(self.logits.shape[0], dtype=torch.int64, device=self.logits.device)
        for layer in self.layers:
            total += getattr(layer, attr)
        return total

    def images(self) -> list[ImageResult]:
        """The batch as one ``ImageResult`` per image, in order (plain Python numbers)."""
        logits = self.logits.double()
        rows, probabilities = logits.tolist(), torch.softmax(logits, dim=1).tolist()
        spikes, additions = self.spikes.tolist(), self.synaptic_additions.tolist()
        per_layer = [(c, c.spikes.tolist(), c.synaptic_additions.tolist()) for c in self.layers]
        return [
            ImageResult(
                engine=self.engine,
                logits=rows[i],
                probabilities=probabilities[i],
                timesteps=self.timesteps,
                spikes=spikes[i],
                synaptic_additions=additions[i],
                neuron_updates=self.neuron_updates,
                ann_macs=self.ann_macs,
                layers=[
                    LayerImage(c.name, c.kind, c.neurons, s[i], a[i], c.neuron_updates)
                    for c, s, a in per_layer
                ],
            )
            for i in range(len(rows))
        ]
