"""Stepped engine: every step of spec section 3 simulated with explicit on/off spike events (the referee).

Global time runs over the schedule's ``timesteps`` plus one step for the last off-spikes (see
``converter.snn.windows``: each population speaks in its own window of ``T_l`` steps). At each step,
populations that speak emit events (input pixels at ``start + T - d``; neurons at the first step their
potential is >= 0; switches when the first of their inputs turns on; every active unit switches off at
its window end), events reach their targets (shortcuts after their delay in steps) as current steps
``I += w`` / ``I -= w`` with ``w = W * (lam_src / T_src) * (T_l / lam_l)``, and integrating neurons update
``V += I + (T_l * (b + c) / lam_l - T_l) / span`` on each of the ``span`` steps before they speak: the
bias (with the calibration's bias correction ``c``, if any) and the ramp ``-theta`` of spec section 3,
spread over the integration span (``b`` and ``-1`` per step when every window is ``T``). Counts are taken
from the events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from converter.snn.ops import run_chain
from converter.snn.quantise import LEVEL_EPS, lam_view, levels
from converter.snn.results import LayerCounts, RunResult

if TYPE_CHECKING:
    from converter.snn.graph import Population
    from converter.snn.model import Network
    from converter.snn.windows import Schedule


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


def run(net: Network, images: Tensor, keep_durations: bool = False) -> RunResult:
    """Simulate every step; return logits, counts and (optionally) durations read from spike times."""
    g, sched, dtype = net.graph, net.schedule, net.dtype
    x = images.to(dtype)
    n = x.shape[0]
    units = {p.name: _Unit(p, n, dtype, net.shift) for p in g.populations}
    per_step = {p.name: net.lam(p.name).to(dtype) / net.window(p.name) for p in g.populations[:-1]}
    gain: dict[str, Tensor] = {}
    drive: dict[str, Tensor] = {}
    for p in g.populations:
        if p.kind not in ("neuron", "output"):
            continue
        bias = g.offsets(p, dtype)
        if p.name in net.corrections:
            bias = bias + lam_view(net.corrections[p.name].to(dtype), bias.dim())
        if p.kind == "neuron":
            T = net.window(p.name)
            gain[p.name] = T / lam_view(net.lam(p.name).to(dtype), bias.dim())
            drive[p.name] = (bias * gain[p.name] - T) / sched.span[p.name]
        else:
            gain[p.name] = torch.ones((), dtype=dtype)
            drive[p.name] = bias / sched.span[p.name]
    T_in = net.window("input")
    d_input = levels(x, T_in, T_in, net.shift)
    delayed = {t.source for p in g.populations for t in p.terms if sched.delay(t, p) > 0}
    for step in range(sched.total + 1):
        events = {
            p.name: _emit(units[p.name], step, sched, d_input, units)
            for p in g.populations
            if p.kind != "output"
        }
        for name in delayed:  # only the speaking window and its off-step carry events; int8 keeps them small
            if sched.start[name] <= step <= sched.end(name):
                units[name].history[step] = events[name].to(torch.int8)
        for p in g.populations:
            if p.kind not in ("neuron", "output"):
                continue
            speak = sched.start[p.name]
            if not speak - sched.span[p.name] <= step <= speak:
                continue
            u = units[p.name]
            for ti, t in enumerate(p.terms):
                delay = sched.delay(t, p)
                ev = units[t.source].history.get(step - delay) if delay else events[t.source]
                if ev is None or not ev.any():
                    continue
                ev = ev.to(dtype)
                signal = ev * lam_view(per_step[t.source], ev.dim())
                u.I += run_chain(t.ops, signal, bias=False) * gain[p.name]
                units[t.source].additions += ev.abs().flatten(1).double() @ net.term_fanouts[p.name][ti]
            if step < speak:
                u.V += u.I + drive[p.name]
    layers = [
        LayerCounts.of(p, units[p.name].spikes, units[p.name].additions, sched.updates(p) * p.size)
        for p in g.populations
    ]
    d = None
    if keep_durations:
        d = {name: _durations(u, sched) for name, u in units.items() if u.p.kind != "output"}
        d["input"] = d_input
    return RunResult("stepped", units[g.output.name].V, net.timesteps, net.ann_macs, layers, d)


def _emit(u: _Unit, step: int, sched: Schedule, d_input: Tensor, units: dict[str, _Unit]) -> Tensor:
    """Signed events (+1 on-spike, -1 off-spike) a population emits at ``step``; updates its state."""
    p = u.p
    start, T = sched.start[p.name], sched.length[p.name]
    ev = torch.zeros(u.active.shape, dtype=u.V.dtype)
    if step == start + T:  # the shared off-spike at the end of the speaking window
        ev -= u.active.to(ev.dtype)
        u.active.zero_()
    elif start <= step < start + T:
        if p.kind == "input":
            on = (d_input == start + T - step) & (d_input > 0)
        elif p.kind == "neuron":
            on = (u.V + LEVEL_EPS >= 0) & (u.on_step < 0)
            u.V += 1.0  # the speaking window's ramp: V += theta every step
        else:  # switch: on as soon as any input is on (the earliest on-spike wins the max)
            on = p.pool(units[p.source].active.to(ev.dtype)).bool() & ~u.active
        u.on_step[on] = step
        u.active |= on
        ev += on.to(ev.dtype)
    if p.kind != "switch":
        u.spikes += ev.abs().flatten(1).sum(1).to(torch.int64)
    return ev


def _durations(u: _Unit, sched: Schedule) -> Tensor:
    """d read back from on-spike times: on at ``end - d``."""
    fired = u.on_step >= 0
    return torch.where(fired, sched.end(u.p.name) - u.on_step, 0).to(u.V.dtype)
