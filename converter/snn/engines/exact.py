"""Float64's levels at float32's cost: the fast engine in float32 with a rounding guard (spec section 7).

A neuron layer's pre-activation, in levels, is ``v = sum_paths W x + b`` with the durations ``x`` of its
sources (whole numbers up to ``T_src``) and the weights of the float64 fast engine's plan (``lam`` and ``T``
folded in, the shift and ``LEVEL_EPS`` in ``b``). The weights are split per output channel ``c``:

    W = W_hi + W_lo,    W_hi = g_c * round(W / g_c),    g_c = 2^ceil(log2(S_c / 2^23))

with ``S_c = sum_paths sum_j |W_cj| T_src + |b_c|``, the largest ``|v|`` any input gives. Every product
``W_hi x`` and every partial sum of them is a multiple of ``g_c`` below ``2^24 g_c``, so float32 computes the
hi part exactly in any order of summation. That is checked on every layer when the plan is made, so that a
kernel which transforms its inputs (Winograd's) is caught; such a layer is computed in float64. The lo part
is below ``g_c / 2`` a weight: its float32 error is at most ``E_c = 2 (gamma_k + 2u) (g_c / 2) (k T_src + 1)``
(``k`` the fan-in, ``u = 2^-24``). With the rounding of ``v = hi + lo``, float32's ``v`` lies within
``E = E_c + 4u |v|`` of the exact value (float64's own rounding is far below that margin, and exact
boundaries are decided by ``LEVEL_EPS``).

Where ``clip(floor(v - E), 0, T)`` and ``clip(floor(v + E), 0, T)`` agree, that is float64's level; an image
with a neuron where they do not has that layer computed again in float64. So every level, spike and
addition is float64's. The logits are computed in float64 (the output layer is small). A layer whose paths
are not moves (slices, padding, reshapes, channel permutations) and one conv, linear or channel affine op
(or scalar affines, which commute with moves) is computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

import torch
from torch import Tensor

from converter.snn.engines import fast
from converter.snn.model import derived
from converter.snn.ops import (
    ChannelAffine,
    ChannelPermutation,
    Conv2d,
    Flatten,
    Linear,
    Op,
    Pad,
    Permute,
    Reshape,
    Slice,
    UpsampleNearest,
    run_chain,
)
from converter.snn.quantise import levels
from converter.snn.results import LayerCounts, RunResult

if TYPE_CHECKING:
    from converter.snn.model import Network

U32 = 2.0**-24  # float32's unit roundoff
WEIGHT_OPS = (Conv2d, Linear, ChannelAffine)
MOVES = (Flatten, Reshape, Permute, Slice, ChannelPermutation, UpsampleNearest, Pad)  # exact on any value


@dataclass
class _Path:
    """One synapse path split for the guard: moves, then the weight op as (hi, lo) with ``hi`` exact."""

    source: str
    moves: list[Op]
    hi: Op
    lo: Op
    error: Tensor  # [C] the lo part's float32 error bound, per output channel

    def __post_init__(self) -> None:
        self.both = _stacked(self.hi, self.lo)

    def parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The hi and lo parts of the weight op on ``x`` (one conv or matmul with both when it can)."""
        if self.both is None:
            return self.hi.forward(x), self.lo.forward(x)
        y = self.both.forward(x)
        half = y.shape[1] // 2
        return y[:, :half], y[:, half:]


def _stacked(hi: Op, lo: Op) -> Op | None:
    """One conv computing ``hi``'s channels then ``lo``'s; None where two ops are needed (grouped convs,
    whose groups would take the wrong inputs, linear ops, channel affines)."""
    if not isinstance(hi, Conv2d) or hi.groups != 1:
        return None
    biases = [op.bias if op.bias is not None else torch.zeros(op.weight.shape[0]) for op in (hi, lo)]
    bias = None if hi.bias is None and lo.bias is None else torch.cat(biases)
    return replace(hi, weight=torch.cat([hi.weight, lo.weight]), bias=bias)


def _normal_form(ops: list[Op]) -> tuple[list[Op], Op] | None:
    """The chain as moves followed by one weight op, or None when it is not one.

    Scalar affines without an offset commute with moves (zero padding stays zero), so a chain of moves and
    scalar affines (a shortcut: scale, slice, pad, scale) becomes its moves and one scalar affine.
    """
    moves = [op for op in ops if isinstance(op, MOVES)]
    weights = [op for op in ops if not isinstance(op, MOVES)]
    if len(weights) == 1 and ops[-1] is weights[0] and isinstance(weights[0], WEIGHT_OPS):
        return moves, weights[0]
    if not weights or not all(isinstance(w, ChannelAffine) and w.scale.dim() == 0 for w in weights):
        return None
    offsets = [w.bias is not None for w in weights]
    if any(offsets[:-1]) or (offsets[-1] and ops[-1] is not weights[-1]):
        return None
    scale = weights[0].scale
    for w in weights[1:]:
        scale = scale * w.scale
    return moves, ChannelAffine(scale=scale, bias=weights[-1].bias)


def _weights(op: Op) -> Tensor:
    """The op's weights as [out channels or 1, -1] (a scalar affine: one row)."""
    w = op.scale if isinstance(op, ChannelAffine) else op.weight
    return w.reshape(w.shape[0] if w.dim() else 1, -1)


def _with(op: Op, weights: Tensor, bias: Tensor | None) -> Op:
    """``op`` with other weights (in its own shape) and bias."""
    if isinstance(op, ChannelAffine):
        return replace(op, scale=weights.reshape(op.scale.shape), bias=bias)
    return replace(op, weight=weights.reshape(op.weight.shape), bias=bias)


def _split(paths: list[tuple[str, list[Op]]], windows: dict[str, int]) -> list[_Path] | None:
    """The layer's paths split into exact hi and small lo parts on one grid per channel (float64 in)."""
    forms = [_normal_form(chain) for _, chain in paths]
    if any(form is None for form in forms):
        return None
    ops = [op for _, op in forms]
    rows = [_weights(op).abs().sum(1) * windows[source] for (source, _), op in zip(paths, ops, strict=True)]
    biases = [op.bias.numel() for op in ops if op.bias is not None]
    channels = max(r.numel() for r in rows) if not biases else max(*(r.numel() for r in rows), *biases)
    reach = sum(r.expand(channels) for r in rows)
    for op in ops:
        if op.bias is not None:
            reach = reach + op.bias.abs().reshape(-1).expand(channels)
    grid = torch.exp2(torch.ceil(torch.log2(reach.clamp_min(1e-30) / 2.0**23)))
    split = []
    for (source, _), (moves, op) in zip(paths, forms, strict=True):
        w = _weights(op)
        g = grid.view(-1, 1) if w.shape[0] == channels else grid.max().view(1, 1)
        w_hi = torch.round(w / g) * g
        b = op.bias
        b_hi = None if b is None else torch.round(b / g.reshape(-1)) * g.reshape(-1)
        fan_in = w.shape[1]
        gamma = fan_in * U32 / (1 - fan_in * U32)
        error = 2 * (gamma + 2 * U32) * (g.reshape(-1) / 2) * (fan_in * windows[source] + 1)
        hi = _with(op, w_hi.float(), None if b_hi is None else b_hi.float())
        lo = _with(op, (w - w_hi).float(), None if b is None else (b - b_hi).float())
        split.append(_Path(source, moves, hi, lo, error.float().expand(channels).clone()))
    return split


def _exact_on_grid(paths: list[_Path], shapes: dict[str, tuple[int, ...]], windows: dict[str, int]) -> bool:
    """Whether float32 computes the hi part exactly here: random whole-number inputs, against float64."""
    gen = torch.Generator().manual_seed(0)
    x = {
        p.source: torch.randint(0, windows[p.source] + 1, (16, *shapes[p.source]), generator=gen)
        for p in paths
    }
    ours = sum(p.parts(run_chain(p.moves, x[p.source].float()))[0] for p in paths)
    theirs = sum(run_chain([*p.moves, p.hi.to(torch.float64)], x[p.source].double()) for p in paths)
    return bool(torch.equal(ours.double(), theirs))


class Plan:
    """Per neuron layer its split paths (or None: computed in float64), beside the float64 fast plan."""

    def __init__(self, net: Network) -> None:
        self.net64 = float64_twin(net)
        plan64 = fast.plan_of(self.net64)
        self.paths64 = plan64.paths
        self.counters = plan64.counters
        shapes = {p.name: p.shape for p in net.graph.populations}
        windows = {name: net.window(name) for name in shapes if name in net.schedule.length}
        self.split: dict[str, list[_Path] | None] = {}
        for p in net.graph.neurons:
            split = _split(self.paths64[p.name], windows)
            if split is not None and not _exact_on_grid(split, shapes, windows):
                split = None  # this kernel does not add exactly (Winograd or the like): float64 here
            if split is not None:
                split = [replace(s, moves=[op.to(torch.float32) for op in s.moves]) for s in split]
                # (replace runs __post_init__ again: the stacked op is rebuilt from hi and lo)
            self.split[p.name] = split


_PLANS: WeakKeyDictionary[Network, Plan] = WeakKeyDictionary()
_TWINS: WeakKeyDictionary[Network, Network] = WeakKeyDictionary()


def float64_twin(net: Network) -> Network:
    """``net`` in float64, made once (the float64 fast plan is cached on it; no reference back to ``net``)."""
    return net if net.dtype == torch.float64 else derived(_TWINS, net, lambda n: n.to(torch.float64))


def plan_of(net: Network) -> Plan:
    """The guard's plan for ``net`` (a float32 network), cached."""
    return derived(_PLANS, net, Plan)


def _guarded(split: list[_Path], d: dict[str, Tensor], T: int) -> tuple[Tensor, Tensor]:
    """Durations of one layer in float32 and, per image, whether any neuron needs float64 to decide."""
    hi = lo = bound = None
    for s in split:
        x = run_chain(s.moves, d[s.source])
        h, low = s.parts(x)
        hi = h if hi is None else hi.add_(h)
        lo = low if lo is None else lo.add_(low)
        e = s.error.view(1, -1, *([1] * (h.dim() - 2)))
        bound = e if bound is None else bound + e
    v = hi.add_(lo)
    margin = v.abs().mul_(4 * U32).add_(bound)
    below = (v - margin).floor_().clamp_(0, T)
    above = (v + margin).floor_().clamp_(0, T)
    unsure = (below != above).flatten(1).any(1)
    return below, unsure


def guarded_here(device: torch.device) -> bool:
    """Whether float32 convolutions add exactly here: on CPUs through oneDNN's direct kernels (or im2col
    and a matrix product), never Winograd; NNPACK, which may use Winograd, is off while the engine runs.
    On GPUs (cuDNN picks Winograd or FFT, TF32 rounds) the engine computes in float64."""
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


def run(net: Network, images: Tensor, keep_durations: bool = False) -> RunResult:
    """Float64's durations, counts and logits, computing in float32 wherever the guard allows."""
    if net.dtype == torch.float64 or not guarded_here(net.device):  # nothing to guard, or no guard here
        return replace(fast.run(float64_twin(net), images, keep_durations), engine="fast")
    with torch.backends.nnpack.flags(enabled=False):
        return _run(net, images, keep_durations)


def _run(net: Network, images: Tensor, keep_durations: bool) -> RunResult:
    plan = plan_of(net)
    n = images.shape[0]
    d: dict[str, Tensor] = {}
    layers: list[LayerCounts] = []
    zeros = torch.zeros(n, dtype=torch.int64)
    logits = images.double()
    for p in net.graph.populations:
        updates = net.schedule.updates(p) * p.size
        if p.kind == "output":
            logits = fast.integrate(plan.paths64[p.name], {s: d[s].double() for s, _ in plan.paths64[p.name]})
            layers.append(LayerCounts.of(p, zeros, zeros, updates))
            break
        T = net.window(p.name)
        if p.kind == "input":  # elementwise, so float64 costs nothing here
            d[p.name] = levels(images.to(torch.float64), T, T, net.shift).float()
        elif p.kind == "switch":
            d[p.name] = p.pool(d[p.source])
        elif plan.split[p.name] is None:
            d64 = {s: d[s].double() for s, _ in plan.paths64[p.name]}
            d[p.name] = fast.integrate(plan.paths64[p.name], d64).floor_().clamp_(0, T).float()
        else:
            d[p.name], unsure = _guarded(plan.split[p.name], d, T)
            if bool(unsure.any()):
                rows = unsure.nonzero().flatten()
                d64 = {s: d[s][rows].double() for s, _ in plan.paths64[p.name]}
                exact = fast.integrate(plan.paths64[p.name], d64).floor_().clamp_(0, T)
                d[p.name][rows] = exact.float()
        spikes, additions = plan.counters[p.name](d[p.name])
        layers.append(LayerCounts.of(p, zeros if p.kind == "switch" else spikes, additions, updates))
    return RunResult("fast", logits, net.timesteps, net.ann_macs, layers, d if keep_durations else None)
