"""Fast engine: the closed form of spec section 3 (quantised ANN forward) plus exact counting."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from converter.counting import durations_to_counts
from converter.engines.common import durations, lam_view, switch_pool
from converter.ops import run_chain
from converter.results import LayerCounts, RunResult

if TYPE_CHECKING:
    from converter.network import SpikingNetwork


def run(net: SpikingNetwork, images: Tensor, keep_durations: bool = False) -> RunResult:
    """Durations layer by layer in closed form; counts from precomputed fan-outs."""
    T, s = net.T, net.shift
    x = images.to(net.dtype)
    d: dict[str, Tensor] = {}
    act: dict[str, Tensor] = {}
    layers: list[LayerCounts] = []
    logits = x
    for p in net.graph.populations:
        if p.kind == "output":
            logits = sum(run_chain(t.ops, act[t.source]) for t in p.terms)
            layers.append(
                LayerCounts(
                    p.name,
                    p.kind,
                    p.size,
                    torch.zeros(x.shape[0], dtype=torch.int64),
                    torch.zeros(x.shape[0], dtype=torch.int64),
                    T * p.size,
                )
            )
            break
        if p.kind == "input":
            d[p.name] = durations(x, torch.ones((), dtype=x.dtype), T, s)
            act[p.name] = d[p.name] / T
        elif p.kind == "switch":
            d[p.name] = switch_pool(d[p.source], p.pool)
            act[p.name] = switch_pool(act[p.source], p.pool)
        else:
            lam = net.lams[p.name]
            z = sum(run_chain(t.ops, act[t.source]) for t in p.terms)
            d[p.name] = durations(z, lam, T, s)
            act[p.name] = d[p.name] * (lam_view(lam, z.dim()) / T)
        spikes, additions = durations_to_counts(d[p.name], net.fanouts[p.name])
        if p.kind == "switch":
            spikes = torch.zeros_like(spikes)
        layers.append(
            LayerCounts(
                p.name, p.kind, p.size, spikes, additions, 2 * T * p.size if p.kind == "neuron" else 0
            )
        )
    return RunResult("fast", logits, net.timesteps, net.ann_macs, layers, d if keep_durations else None)
