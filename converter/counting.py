"""Exact synapse counts (spec section 6), precomputed once per network.

The fan-out of a neuron depends only on its place in the map (borders, stride, folded pooling), never on
the image, so it is computed once: for each synapse path, the transpose of its 0/1 connectivity applied
to ones gives, per source neuron, the number of target neurons it reaches. An image's synaptic
additions are then ``2 * sum(fanout[d > 0])``: one dot product per population. Per image and layer:

    fanout_i     = sum over paths p of (S_p^T 1)_i          (S_p: 0/1 structure of path p's op chain)
    spikes       = 2 * #{i : d_i > 0}                        (one on- and one off-spike per active neuron)
    additions    = 2 * sum_{i : d_i > 0} fanout_i            (memory accesses: one weight read each)
    updates      = n * (span + T)                            (output layer: n * span)
    ann_macs     = sum over conv/linear ops of out_elements * kernel_elements
"""

from __future__ import annotations

import torch
from torch import Tensor

from converter.graph import Graph, Term
from converter.ops import run_structure


def term_fanout(term: Term, source_shape: tuple[int, ...]) -> Tensor:
    """Synapses leaving each source neuron along one path, shape ``source_shape`` (float64 integers)."""
    x = torch.zeros(1, *source_shape, dtype=torch.float64, requires_grad=True)
    y = run_structure([op.to(torch.float64) for op in term.ops], x)
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    return grad[0].detach()


def term_fanouts(graph: Graph) -> dict[str, list[Tensor]]:
    """Per target population: the flattened fan-out of each of its terms' sources along that term."""
    return {
        p.name: [term_fanout(t, graph.by_name[t.source].shape).flatten() for t in p.terms]
        for p in graph.populations
    }


def fanouts(graph: Graph, per_term: dict[str, list[Tensor]]) -> dict[str, Tensor]:
    """Per source population (input, neurons, switches): all synapses leaving each neuron, flattened."""
    out = {p.name: torch.zeros(p.size, dtype=torch.float64) for p in graph.populations if p.kind != "output"}
    for p in graph.populations:
        for t, f in zip(p.terms, per_term[p.name], strict=True):
            out[t.source] += f
    return out


def ann_macs(graph: Graph) -> int:
    """Multiply-accumulates of the dense ANN forward for one image: each conv and linear call once.

    A call whose output several terms consume (a pre-activation feeding a BN-ReLU and a shortcut) sits
    in each of their chains; the ANN computes it once, so it is counted once (by its ``origin``).
    """
    total, counted = 0, set()
    for p in graph.populations:
        for t in p.terms:
            x = torch.zeros(1, *graph.by_name[t.source].shape)
            for op in (op.to(torch.float32) for op in t.ops):
                origin = getattr(op, "origin", "")
                if not (origin and origin in counted):
                    total += op.macs(tuple(x.shape[1:]))
                    counted.add(origin)
                x = op.forward(x, bias=False)
    return total
