"""Fast engine: the closed form of spec section 3 (quantised ANN forward) plus exact counting.

A TSC neuron's spike timing encodes ``d``, and the whole window's integration has a closed form:

    d_in = clip(floor(T_in * x + s), 0, T_in)                               (pixels)
    z_l  = sum_t W_t (lam_src / T_src) d_src + b_l (+ c_l)                  (terms t of layer l)
    d_l  = clip(floor(T_l * z_l / lam_l + s), 0, T_l)                       (neurons)
    d_sw = maxpool(d_src)                                                   (switches)
    logits = z_out

    spikes_l = 2 * #{i : d_l,i > 0}       additions_l = 2 * sum_{i : d_l,i > 0} fanout_l,i

Per layer it costs one conv/linear like the ANN, two in-place passes for the TSC code (floor, clip)
and a compare-and-count for the spikes and additions. Counts group neurons by fan-out value: a fan-out
takes a handful of values (interior, borders, corners), so active neurons counted per group times the
group's fan-out gives the additions exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

import torch
from torch import Tensor

from converter.snn.fold import append_affine, prepend_scale
from converter.snn.model import derived
from converter.snn.ops import ChannelAffine, Op, run_chain
from converter.snn.quantise import LEVEL_EPS, levels
from converter.snn.results import LayerCounts, RunResult

if TYPE_CHECKING:
    from converter.snn.model import Network

MAX_GROUPS = 64


@dataclass
class _Counter:
    """Exact spike and addition counts from durations.

    When every channel at a position has the same fan-out (no pruned weights), active neurons are first
    counted per position over channels; positions (or neurons) are then grouped by fan-out value.
    """

    spatial: bool  # fan-out depends on the position only: reduce over channels first
    onehot: Tensor | None  # [positions or neurons, groups], grouped by fan-out value
    values: Tensor  # [groups] float64 fan-out of each group (or per neuron when not grouped)

    @classmethod
    def build(cls, fanout: Tensor, shape: tuple[int, ...]) -> _Counter:
        per_channel = fanout.view(shape[0], -1)
        spatial = len(shape) > 1 and bool((per_channel == per_channel[:1]).all())
        f = per_channel[0] if spatial else fanout
        values, inverse = torch.unique(f, return_inverse=True)
        if values.numel() > MAX_GROUPS:
            return cls(spatial, None, f)
        return cls(spatial, torch.nn.functional.one_hot(inverse, values.numel()).double(), values.double())

    def __call__(self, d: Tensor) -> tuple[Tensor, Tensor]:
        active = torch.clamp(d, max=1)  # d is a non-negative integer: 1 where the neuron spikes
        counts = active.view(d.shape[0], d.shape[1], -1).sum(1) if self.spatial else active.flatten(1)
        counts = counts.double()
        if self.onehot is None:
            return 2 * counts.sum(1).round().long(), 2 * (counts @ self.values).round().long()
        per_group = counts @ self.onehot
        return 2 * per_group.sum(1).round().long(), 2 * (per_group @ self.values).round().long()


class Plan:
    """Synapse paths with the spec's normalised weights: durations in, ``T_l * z / lam + shift`` out.

    The input factor ``lam_src / T_src`` and the output factor ``T_l / lam`` (and, on one path, the shift plus
    ``LEVEL_EPS``, which decides exact boundaries upwards, see ``converter.snn.quantise.level_floor``) are
    folded into the first and last weight op of each path, so a layer costs one conv plus floor and clip.
    """

    def __init__(self, net: Network) -> None:
        dtype = net.dtype
        self.paths: dict[str, list[tuple[str, list[Op]]]] = {}
        for p in net.graph.populations:
            if p.kind not in ("neuron", "output"):
                continue
            correction = net.corrections.get(p.name)
            if p.kind == "neuron":  # durations: T_l * (z + c) / lam + shift (+ tolerance)
                gain = (net.window(p.name) / net.lam(p.name)).to(dtype)
                offset = torch.tensor(net.shift + LEVEL_EPS, dtype=dtype)
                if correction is not None:
                    offset = offset + correction.to(dtype) * gain
            else:  # logits stay in ANN units: z + c
                gain, offset = torch.ones((), dtype=dtype), correction
            paths = []
            for i, t in enumerate(p.terms):
                ops = prepend_scale(t.ops, (net.lam(t.source) / net.window(t.source)).to(dtype))
                if p.kind == "neuron" or (i == 0 and offset is not None):
                    ops = append_affine(ops, ChannelAffine(scale=gain, bias=offset if i == 0 else None))
                paths.append((t.source, ops))
            self.paths[p.name] = paths
        self.counters = {
            name: _Counter.build(f, net.graph.by_name[name].shape) for name, f in net.fanouts.items()
        }


def integrate(paths: list[tuple[str, list[Op]]], d: dict[str, Tensor]) -> Tensor:
    """A layer's input summed over its synapse paths from the sources' durations ``d``."""
    z: Tensor | None = None
    for source, ops in paths:
        only = ops[0] if len(ops) == 1 else None
        if z is not None and isinstance(only, ChannelAffine) and only.bias is None and only.scale.dim() == 0:
            z.add_(d[source], alpha=float(only.scale))  # identity shortcut: one fused pass
            continue
        y = run_chain(ops, d[source])
        z = y if z is None else z.add_(y)
    assert z is not None
    return z


_PLANS: WeakKeyDictionary[Network, Plan] = WeakKeyDictionary()  # one per network object (copies: their own)


def plan_of(net: Network) -> Plan:
    """The precomputed paths and counters for ``net`` (its windows, dtype and device), cached."""
    return derived(_PLANS, net, Plan)


def run(net: Network, images: Tensor, keep_durations: bool = False) -> RunResult:
    """Durations layer by layer in closed form; counts from precomputed fan-out groups."""
    plan = plan_of(net)
    s = net.shift
    n = images.shape[0]
    d: dict[str, Tensor] = {}
    layers: list[LayerCounts] = []
    logits = images
    zeros = torch.zeros(n, dtype=torch.int64)
    for p in net.graph.populations:
        updates = net.schedule.updates(p) * p.size
        if p.kind == "output":
            logits = integrate(plan.paths[p.name], d)
            layers.append(LayerCounts.of(p, zeros, zeros, updates))
            break
        T = net.window(p.name)
        if p.kind == "input":
            d[p.name] = levels(images.to(net.dtype).contiguous(), T, T, s)
        elif p.kind == "switch":
            d[p.name] = p.pool(d[p.source])
        else:
            d[p.name] = integrate(plan.paths[p.name], d).floor_().clamp_(0, T)
        spikes, additions = plan.counters[p.name](d[p.name])
        layers.append(LayerCounts.of(p, zeros if p.kind == "switch" else spikes, additions, updates))
    return RunResult("raw", logits, net.timesteps, net.ann_macs, layers, d if keep_durations else None)
