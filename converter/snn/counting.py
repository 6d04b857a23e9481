"""Exact synapse counts (spec section 6), precomputed once per network.

A synapse is a distinct (source neuron, target neuron) pair whose composite weight, summed over every
path between them, is non-zero. Its count per source neuron (the fan-out) depends only on the neuron's
place in the map (borders, stride, folded pooling), never on the image, so it is computed once per
(target population, source population):

- one path whose chain spreads at most once (one conv, pool or linear among relabelling ops: flatten,
  pad, slice, channel permutation, per-channel affine) joins each pair at most once, so the transpose of
  its 0/1 structure applied to ones counts the synapses: ``fanout = S^T 1``;
- otherwise (several paths from one source, or chains that spread twice: a linear bottleneck, a conv
  then an overlapping pool) the composite map ``M = sum_t J_t`` is probed with one-hot inputs and its
  non-zeros are counted column by column: ``fanout_i = #{j : M[j, i] != 0}``; chains of pointwise ops
  (1x1 convs, channel maps) are probed on a single pixel, since every position behaves alike.

An image's synaptic additions are then ``2 * sum(fanout[d > 0])``: one dot product per population.
Per image and layer:

    spikes       = 2 * #{i : d_i > 0}                        (one on- and one off-spike per active neuron)
    additions    = 2 * sum_{i : d_i > 0} fanout_i            (memory accesses: one weight read each)
    updates      = n * (span + T)                            (output layer: n * span)
    ann_macs     = sum over conv/linear calls of out_elements * kernel_elements   (each call once)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from converter.snn.graph import Graph, Term
from converter.snn.ops import (
    ChannelAffine,
    ChannelPermutation,
    Conv2d,
    Flatten,
    Op,
    Pad,
    Permute,
    Reshape,
    Slice,
    run_structure,
)

# each input element reaches at most one output element
RELABELLING = (Flatten, Reshape, Permute, Pad, Slice, ChannelPermutation, ChannelAffine)
PROBE_BUDGET = 4e9  # one-hot probes x elements per probe, per (target, source); beyond it paths are counted
CHUNK_ELEMENTS = 2**24  # elements of one batch of probes


def term_fanout(term: Term, source_shape: tuple[int, ...]) -> Tensor:
    """Synapses leaving each source neuron along one path, shape ``source_shape`` (float64 integers)."""
    x = torch.zeros(1, *source_shape, dtype=torch.float64, requires_grad=True)
    y = run_structure([op.to(torch.float64) for op in term.ops], x)
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    return grad[0].detach()


def _single_path(ops: Sequence[Op]) -> bool:
    """Whether a chain joins each (source, target) pair along at most one path."""
    return sum(not isinstance(op, RELABELLING) for op in ops) <= 1


def _pointwise(op: Op) -> bool:
    """Whether an op maps each pixel to the same pixel (a 1x1 stride-1 conv, a channel map or pad)."""
    if isinstance(op, Conv2d):
        return list(op.weight.shape[2:]) == [1, 1] and op.stride == [1, 1] and op.padding == [0, 0]
    if isinstance(op, Pad):  # channels are the third pair of F.pad's list: the first two must be zero
        return len(op.pad) >= 6 and not any(op.pad[:4]) and not any(op.pad[6:])
    return isinstance(op, (ChannelAffine, ChannelPermutation))


def _composite(chains: list[list[Op]], basis: Tensor) -> Tensor:
    """``sum_t J_t`` applied to a batch of inputs (no offsets), one output row per input."""
    total = 0
    for ops in chains:
        y = basis
        for op in ops:
            y = op.forward(y, bias=False)
        total = total + y.reshape(basis.shape[0], -1)
    return total


def _probed_fanout(chains: list[list[Op]], shape: tuple[int, ...]) -> Tensor | None:
    """Distinct targets of each source neuron by one-hot probes, or None when over the probe budget."""
    chains = [[op.to(torch.float64) for op in ops] for ops in chains]
    if len(shape) == 3 and all(_pointwise(op) for ops in chains for op in ops):
        channels = shape[0]
        basis = torch.eye(channels, dtype=torch.float64).view(channels, channels, 1, 1)
        per_channel = (_composite(chains, basis) != 0).sum(1).double()
        return per_channel.view(channels, 1, 1).expand(shape).clone()
    n = torch.Size(shape).numel()
    width = _composite(chains, torch.zeros(1, *shape, dtype=torch.float64)).shape[1] + n
    if n * width > PROBE_BUDGET:
        return None
    counts = torch.empty(n, dtype=torch.float64)
    step = max(1, CHUNK_ELEMENTS // width)
    for start in range(0, n, step):
        rows = torch.arange(start, min(n, start + step))
        basis = torch.zeros(len(rows), n, dtype=torch.float64)
        basis[torch.arange(len(rows)), rows] = 1
        counts[rows] = (_composite(chains, basis.view(len(rows), *shape)) != 0).sum(1).double()
    return counts.view(shape)


def term_fanouts(graph: Graph) -> dict[str, list[Tensor]]:
    """Per target population, per term: the synapses each source neuron gains through that term, flattened.

    Terms sharing a source are counted together (their synapses are the union); the count goes to the
    first of them and the others get zeros, so sums over terms give every source neuron's fan-out.
    """
    out: dict[str, list[Tensor]] = {}
    for p in graph.populations:
        fans: list[Tensor] = [torch.zeros(0)] * len(p.terms)
        for source in dict.fromkeys(t.source for t in p.terms):
            shape = graph.by_name[source].shape
            index = [i for i, t in enumerate(p.terms) if t.source == source]
            chains = [p.terms[i].ops for i in index]
            single = len(index) == 1 and _single_path(chains[0])
            fan = None if single else _probed_fanout(chains, shape)
            if fan is None and not single:
                warnings.warn(
                    f"synapses from {source!r} to {p.name!r} are counted per path (too large to probe "
                    "exactly); additions through them are an upper bound",
                    stacklevel=2,
                )
            if fan is None:
                fan = sum(term_fanout(p.terms[i], shape) for i in index)
            fans[index[0]] = fan.flatten()
            for i in index[1:]:
                fans[i] = torch.zeros_like(fans[index[0]])
        out[p.name] = fans
    return out


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
