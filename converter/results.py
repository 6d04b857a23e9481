"""What an engine returns: logits and the operation counts of spec section 6, per image and per layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class LayerCounts:
    """Counts of one population (input pixels, a neuron layer, a max-pool switch or the output layer)."""

    name: str
    kind: str  # "input" | "neuron" | "switch" | "output"
    neurons: int
    spikes: torch.Tensor  # [N] int64, spikes emitted by this population
    synaptic_additions: torch.Tensor  # [N] int64, additions its spikes cause downstream
    neuron_updates: int  # per image: one addition per neuron per step it integrates or speaks

    def image(self, i: int) -> dict:
        """Plain-Python counts of image ``i``."""
        return {
            "name": self.name,
            "kind": self.kind,
            "neurons": self.neurons,
            "spikes": int(self.spikes[i]),
            "synaptic_additions": int(self.synaptic_additions[i]),
            "memory_accesses": int(self.synaptic_additions[i]),
            "neuron_updates": self.neuron_updates,
        }


@dataclass(frozen=True)
class RunResult:
    """Logits and per-image counts of one engine run over a batch."""

    engine: str  # "fast" | "stepped" | "rate" | "ann"
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
    def memory_accesses(self) -> torch.Tensor:
        """Weight reads per image: one per synaptic event, so equal to the additions."""
        return self.synaptic_additions

    @property
    def neuron_updates(self) -> int:
        """Neuron-state additions per image (the same for every image)."""
        return sum(layer.neuron_updates for layer in self.layers)

    def _total(self, attr: str) -> torch.Tensor:
        n = self.logits.shape[0]
        total = torch.zeros(n, dtype=torch.int64)
        for layer in self.layers:
            total += getattr(layer, attr)
        return total

    def image(self, i: int) -> dict:
        """Plain-Python summary of image ``i``: totals and per-layer counts."""
        return {
            "engine": self.engine,
            "timesteps": self.timesteps,
            "spikes": int(self.spikes[i]),
            "synaptic_additions": int(self.synaptic_additions[i]),
            "memory_accesses": int(self.memory_accesses[i]),
            "neuron_updates": self.neuron_updates,
            "ann_macs": self.ann_macs,
            "layers": [layer.image(i) for layer in self.layers],
        }
