"""The bridge to the converter: what the service needs of a network; one batch run as plain data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from converter.results import RunResult


class InputSpec(Protocol):
    """Shape of the pixels a network takes."""

    channels: int
    height: int
    width: int


class Network(Protocol):
    """The part of ``converter``'s loaded network the service uses."""

    name: str
    version: str
    T: int
    timesteps: int
    labels: list[str]
    input_spec: InputSpec
    ann_macs: int
    manifest: dict[str, Any]

    def run(self, images: torch.Tensor, engine: str = "fast", **kwargs: Any) -> RunResult:
        """Classify a batch [N, C, H, W] of pixels in [0, 1] with one engine."""
        ...


@dataclass(frozen=True)
class LayerFigures:
    """One population's counts for one image."""

    name: str
    kind: str
    neurons: int
    spikes: int
    synaptic_additions: int
    neuron_updates: int


@dataclass(frozen=True)
class ImageResult:
    """One image's class probabilities and operation counts from one engine."""

    engine: str
    probabilities: list[float]
    timesteps: int
    spikes: int
    synaptic_additions: int
    memory_accesses: int
    neuron_updates: int
    layers: list[LayerFigures]


def run_batch(net: Network, images: torch.Tensor, engine: str, rate_steps: int) -> list[ImageResult]:
    """Each image's probabilities and counts from one engine run over a batch (call off the event loop)."""
    kwargs = {"rate_steps": rate_steps} if engine == "rate" else {}
    with torch.inference_mode():
        result = net.run(images, engine=engine, **kwargs)
        probabilities = torch.softmax(result.logits.double(), dim=1).tolist()
    spikes, additions = result.spikes.tolist(), result.synaptic_additions.tolist()
    memory = result.memory_accesses.tolist()
    layers = [(layer, layer.spikes.tolist(), layer.synaptic_additions.tolist()) for layer in result.layers]
    return [
        ImageResult(
            engine=result.engine,
            probabilities=p,
            timesteps=result.timesteps,
            spikes=spikes[i],
            synaptic_additions=additions[i],
            memory_accesses=memory[i],
            neuron_updates=result.neuron_updates,
            layers=[
                LayerFigures(layer.name, layer.kind, layer.neurons, s[i], a[i], layer.neuron_updates)
                for layer, s, a in layers
            ],
        )
        for i, p in enumerate(probabilities)
    ]


def warm_up(net: Network) -> None:
    """Run one dummy image through the fast engine so the first request does not pay for lazy set-up."""
    spec = net.input_spec
    run_batch(net, torch.zeros(1, spec.channels, spec.height, spec.width), "fast", rate_steps=1)
