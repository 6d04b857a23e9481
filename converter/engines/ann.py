"""The float ANN the SNN approximates (BatchNorm folded, ReLU unclipped): reference and calibration source."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from converter.engines.common import switch_pool
from converter.ops import run_chain
from converter.results import RunResult

if TYPE_CHECKING:
    from converter.graph import Graph
    from converter.network import SpikingNetwork


def forward(graph: Graph, x: Tensor, on_neuron: Callable[[str, Tensor], None] | None = None) -> Tensor:
    """Logits of the float network; ``on_neuron(name, relu_output)`` sees every neuron layer's activations."""
    act: dict[str, Tensor] = {"input": x}
    for p in graph.populations:
        if p.kind == "switch":
            act[p.name] = switch_pool(act[p.source], p.pool)
            continue
        if p.kind == "input":
            continue
        z = sum(run_chain(t.ops, act[t.source]) for t in p.terms)
        if p.kind == "output":
            return z
        act[p.name] = torch.relu(z)
        if on_neuron is not None:
            on_neuron(p.name, act[p.name])
    raise ValueError("graph has no output population")


def run(net: SpikingNetwork, images: Tensor) -> RunResult:
    """ANN logits with its dense MAC count (no spikes, no timesteps)."""
    return RunResult("ann", forward(net.graph, images.to(net.dtype)), 0, net.ann_macs, [])
