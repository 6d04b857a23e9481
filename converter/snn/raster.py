"""The spike raster of one image: on- and off-spike steps of a sample of neurons per layer (spec section 2).

A neuron with duration ``d > 0`` in a window ending at step ``end`` spikes on at ``end - d`` and off at
``end``; ``d = 0`` is silence. Durations come from a TSC engine run with ``keep_durations=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from converter.snn.model import Network

MAX_NEURONS_PER_LAYER = 256


@dataclass(frozen=True)
class RasterLayer:
    """Sampled neurons of one layer: their flat indices and spike steps (``on`` is None when silent)."""

    name: str
    kind: str
    start: int
    end: int
    neurons: list[int]
    on: list[int | None]

    @property
    def off(self) -> int:
        """The step every active neuron of the layer switches off: its window's end."""
        return self.end


def spike_raster(
    net: Network,
    durations: dict[str, Tensor],
    image: int = 0,
    neurons_per_layer: int = 64,
    seed: int = 0,
) -> list[RasterLayer]:
    """Spike steps of a fixed random sample of neurons of the input and of each neuron layer."""
    if not 1 <= neurons_per_layer <= MAX_NEURONS_PER_LAYER:
        raise ValueError(f"neurons_per_layer must be 1..{MAX_NEURONS_PER_LAYER}, got {neurons_per_layer}")
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for p in net.graph.populations:
        if p.kind not in ("input", "neuron"):
            continue
        d = durations[p.name][image].flatten()
        pick = torch.randperm(d.numel(), generator=generator)[:neurons_per_layer].sort().values
        end = net.schedule.end(p.name)
        layers.append(
            RasterLayer(
                p.name,
                p.kind,
                net.schedule.start[p.name],
                end,
                pick.tolist(),
                [end - int(v) if v > 0 else None for v in d[pick]],
            )
        )
    return layers
