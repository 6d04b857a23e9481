"""Rate-coded baseline (spec section 8): integrate-and-fire, reset by subtraction, threshold 1, analog input.

The same normalised network runs for ``T_rate`` steps. Each neuron starts at ``V = v0`` (0: the classic
conversion; 0.5, half the threshold: QCFS's initial potential, which centres the rounding error of the
spike count and roughly halves the steps needed at equal accuracy). A spike of a neuron in layer ``l``
stands for ``lam_l``; max pooling passes the spikes of the input that has fired most so far (max-rate gating).
Logits are the output layer's accumulated potential divided by the steps run. Per step ``t``:

    V_l += (sum_t W_t lam_src s_src(t) + b_l) / lam_l       (s_src: 0/1 spikes; the input is analog x)
    s_l(t) = [V_l >= 1],   V_l -= s_l(t)

    spikes_l = sum_t sum_i s_l,i(t)      additions_l = sum_t sum_i s_l,i(t) * fanout_l,i
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from converter.snn.ops import MaxPool, run_chain
from converter.snn.quantise import lam_view
from converter.snn.results import LayerCounts, RunResult

if TYPE_CHECKING:
    from converter.snn.graph import Population
    from converter.snn.model import Network


def run(net: Network, images: Tensor, steps: list[int], v0: float = 0.0) -> list[RunResult]:
    """Simulate ``max(steps)`` steps from ``V = v0``; one result (logits, counts so far) per step count."""
    g = net.graph
    x = images.to(net.dtype)
    n = x.shape[0]
    V = {
        p.name: torch.full((n, *p.shape), v0 if p.kind == "neuron" else 0.0, dtype=x.dtype)
        for p in g.populations
        if p.kind in ("neuron", "output")
    }
    counts = {p.name: torch.zeros(n, *p.shape, dtype=x.dtype) for p in g.populations if p.kind == "neuron"}
    spikes = {p.name: torch.zeros(n, dtype=torch.int64) for p in g.populations}
    additions = {p.name: torch.zeros(n, dtype=torch.float64) for p in g.populations}
    lam = {p.name: net.lam(p.name).to(x.dtype) for p in g.populations}
    constant = {p.name: _constant_input(net, p, x) for p in g.populations if p.kind in ("neuron", "output")}
    results = []
    for step in range(1, max(steps) + 1):
        signal: dict[str, Tensor] = {"input": x}
        for p in g.populations:
            if p.kind == "switch" and p.source == "input":  # analog pixels: plain max pooling, no spikes
                signal[p.name] = p.pool(x)
                continue
            if p.kind == "switch":
                signal[p.name] = _gate(signal[p.source], counts[p.source], p.pool)
                fired = signal[p.name] != 0
            elif p.kind in ("neuron", "output"):
                current = constant[p.name] + sum(
                    (run_chain(t.ops, signal[t.source], bias=False) for t in p.terms if t.source != "input"),
                    torch.zeros_like(V[p.name]),
                )
                if p.kind == "output":
                    V[p.name] += current
                    continue
                V[p.name] += current / lam_view(lam[p.name], current.dim())
                spike = (V[p.name] >= 1).to(x.dtype)
                V[p.name] -= spike
                counts[p.name] += spike
                spikes[p.name] += spike.flatten(1).sum(1).to(torch.int64)
                signal[p.name] = spike * lam_view(lam[p.name], spike.dim())
                fired = spike != 0
            else:
                continue
            additions[p.name] += fired.flatten(1).double() @ net.fanouts[p.name]
        if step in steps:
            results.append(_result(net, V, spikes, additions, step))
    return results


def _constant_input(net: Network, p: Population, x: Tensor) -> Tensor:
    """Per-step current that never changes: biases plus the analog input pixels' paths."""
    const = net.graph.offsets(p, x.dtype).expand(x.shape[0], *p.shape).clone()
    for t in p.terms:
        if t.source == "input":
            const += run_chain(t.ops, x, bias=False)
    return const


def _gate(signal: Tensor, counts: Tensor, pool: MaxPool) -> Tensor:
    """Max-rate gating: each switch passes the signal of the input with the most spikes so far."""
    idx = pool.argmax(counts)
    return signal.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)


def _result(net: Network, V: dict, spikes: dict, additions: dict, step: int) -> RunResult:
    g = net.graph
    layers = [
        LayerCounts.of(
            p,
            spikes[p.name].clone(),
            additions[p.name],
            step * p.size if p.kind in ("neuron", "output") else 0,
        )
        for p in g.populations
    ]
    return RunResult("rate", V[g.output.name] / step, step, net.ann_macs, layers)
