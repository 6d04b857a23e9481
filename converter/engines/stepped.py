"""Stepped engine: every step of spec section 3 simulated with explicit on/off spike events (the referee).

Global time runs over ``L * T`` steps plus one for the last off-spikes. At each step, populations that
speak emit events (input pixels at ``T - d``; neurons at the first step their potential is >= 0;
switches when the first of their inputs turns on; every active unit switches off at its window end),
events reach their targets (after whole-window delays for shortcuts) as current steps ``I += w`` /
``I -= w``, and integrating neurons update ``V += I + b - theta``. Counts are taken from the events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from converter.engines.common import lam_view, level_floor, level_tolerance, switch_pool
from converter.ops import run_chain
from converter.results import LayerCounts, RunResult

if TYPE_CHECKING:
    from converter.graph import Population
    from converter.network import SpikingNetwork


class _Unit:
    """Simulation state of one population."""

    def __init__(self, p: Population, n: int, dtype: torch.dtype, shift: float) -> None:
        self.p = p
        self.active = torch.zeros(n, *p.shape, dtype=torch.bool)  # between on- and off-spike
        self.on_step = torch.full((n, *p.shape), -1, dtype=torch.int64)
        self.V = torch.full((n, *p.shape), shift if p.kind == "neuron" else 0.0, dtype=dtype)
        self.I = torch.zeros(n, *p.shape, dtype=dtype)
        self.history: dict[int, Tensor] = {}  # step -> signed events (+1 on, -1 off), kept for delayed paths
        self.spikes = torch.zeros(n, dtype=torch.int64)
        self.additions = torch.zeros(n, dtype=torch.float64)


def run(net: SpikingNetwork, images: Tensor, keep_durations: bool = False) -> RunResult:
    """Simulate every step; return logits, counts and (optionally) durations read from spike times."""
    g, T = net.graph, net.T
    dtype = net.dtype
    x = images.to(dtype)
    n = x.shape[0]
    units = {p.name: _Unit(p, n, dtype, net.shift) for p in g.populations}
    lam = {p.name: net.lam(p.name).to(dtype) for p in g.populations}
    bias = {
        p.name: g.offsets(p, dtype) / lam_view(lam[p.name], len(p.shape) + 1)
        for p in g.populations
        if p.kind in ("neuron", "output")
    }
    d_input = torch.clamp(level_floor(x * T + net.shift), 0, T)
    delayed = {t.source for p in g.populations for t in p.terms if g.delay(t, p) > 0}
    total = g.depth * T
    for step in range(total + 1):
        window, m = divmod(step, T)
        events = {
            p.name: _emit(units[p.name], step, window, m, T, d_input, units)
            for p in g.populations
            if p.kind != "output"
        }
        for name in delayed:  # only the speaking window and its off-step carry events; int8 keeps them small
            if 0 <= step - units[name].p.window * T <= T:
                units[name].history[step] = events[name].to(torch.int8)
        for p in g.populations:
            if p.kind not in ("neuron", "output"):
                continue
            u = units[p.name]
            integrate = p.window - 1 if p.kind == "neuron" else p.window
            if window not in (integrate, integrate + 1):
                continue
            for ti, t in enumerate(p.terms):
                ev = (
                    units[t.source].history.get(step - g.delay(t, p) * T)
                    if g.delay(t, p)
                    else events[t.source]
                )
                if ev is None or not ev.any():
                    continue
                ev = ev.to(dtype)
                signal = ev * lam_view(lam[t.source], ev.dim())
                u.I += run_chain(t.ops, signal, bias=False) / lam_view(lam[p.name], u.I.dim())
                units[t.source].additions += ev.abs().flatten(1).double() @ net.term_fanouts[p.name][ti]
            if window == integrate and step < total:
                u.V += u.I + bias[p.name] - (1.0 if p.kind == "neuron" else 0.0)
    out = g.output
    layers = [
        LayerCounts(
            p.name,
            p.kind,
            p.size,
            units[p.name].spikes,
            units[p.name].additions.round().to(torch.int64),
            {"neuron": 2 * T, "output": T}.get(p.kind, 0) * p.size,
        )
        for p in g.populations
    ]
    d = None
    if keep_durations:
        d = {name: _durations(u, T) for name, u in units.items() if u.p.kind != "output"}
        d["input"] = d_input
    return RunResult("stepped", units[out.name].V / T, net.timesteps, net.ann_macs, layers, d)


def _emit(
    u: _Unit, step: int, window: int, m: int, T: int, d_input: Tensor, units: dict[str, _Unit]
) -> Tensor:
    """Signed events (+1 on-spike, -1 off-spike) a population emits at ``step``; updates its state."""
    p = u.p
    ev = torch.zeros(u.active.shape, dtype=u.V.dtype)
    if window == p.window + 1 and m == 0:  # the shared off-spike at the end of the speaking window
        ev -= u.active.to(ev.dtype)
        u.active.zero_()
    elif window == p.window:
        if p.kind == "input":
            on = (d_input == T - m) & (d_input > 0)
        elif p.kind == "neuron":
            on = (u.V + level_tolerance(u.V.dtype) >= 0) & (u.on_step < 0)
            u.V += 1.0  # the speaking window's ramp: V += theta every step
        else:  # switch: on as soon as any input is on (the earliest on-spike wins the max)
            on = switch_pool(units[p.source].active.to(ev.dtype), p.pool).bool() & ~u.active
        u.on_step[on] = step
        u.active |= on
        ev += on.to(ev.dtype)
    if p.kind != "switch":
        u.spikes += ev.abs().flatten(1).sum(1).to(torch.int64)
    return ev


def _durations(u: _Unit, T: int) -> Tensor:
    """d read back from on-spike times: on at ``(window + 1) * T - d``."""
    fired = u.on_step >= 0
    return torch.where(fired, (u.p.window + 1) * T - u.on_step, 0).to(u.V.dtype)
