"""Engines that run a converted network, in one registry: name -> run function, coding, serving lane.

``fast`` (TSC in closed form, float64's levels in every precision: ``exact``), ``raw`` (the closed form
unguarded, in the network's own arithmetic), ``stepped`` (TSC event by event in float64, the reference),
``rate`` (the rate-coded IF baseline) and ``ann`` (the float network the SNN approximates). Everything
that lists, runs or compares engines (``Network.run``, the CLI, the service's lanes and allowed values)
reads ``ENGINES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from converter.snn.engines import ann, exact, fast, rate, stepped
from converter.snn.results import RunResult

if TYPE_CHECKING:
    from converter.snn.model import Network

Coding = Literal["tsc", "rate", "ann"]
Lane = Literal["interactive", "reference"]


@dataclass(frozen=True)
class RunOptions:
    """Settings some engines read: rate steps and initial potential, whether to keep TSC durations."""

    rate_steps: int = 256
    rate_v0: float = 0.0
    keep_durations: bool = False

    def __post_init__(self) -> None:
        if self.rate_steps < 1:
            raise ValueError(f"rate_steps must be positive, got {self.rate_steps}")


@dataclass(frozen=True)
class Engine:
    """One engine: how to run it, what it codes, and where a server runs it (reference engines are slow)."""

    name: str
    run: Callable[[Network, Tensor, RunOptions], RunResult]
    coding: Coding
    lane: Lane
    summary: str

    @property
    def spikes(self) -> bool:
        """Whether it spikes (and so has spikes and synaptic additions to count)."""
        return self.coding != "ann"


ENGINES: dict[str, Engine] = {
    e.name: e
    for e in (
        Engine(
            "fast",
            lambda net, x, o: exact.run(net, x, o.keep_durations),
            "tsc",
            "interactive",
            "TSC in closed form with float64's levels and counts in every precision (float32 with a rounding "
            "guard, spec section 7)",
        ),
        Engine(
            "raw",
            lambda net, x, o: fast.run(net, x, o.keep_durations),
            "tsc",
            "interactive",
            "TSC in closed form in the network's own arithmetic, unguarded: in float32 a level within "
            "rounding of a boundary may differ from float64's (spec section 7)",
        ),
        Engine(
            "stepped",
            lambda net, x, o: stepped.run(exact.float64_twin(net), x, o.keep_durations),
            "tsc",
            "reference",
            "TSC simulated step by step in float64, the reference; agrees with fast exactly",
        ),
        Engine(
            "rate",
            lambda net, x, o: rate.run(net, x, [o.rate_steps], o.rate_v0)[0],
            "rate",
            "reference",
            "rate-coded integrate-and-fire baseline (spec section 8)",
        ),
        Engine(
            "ann", lambda net, x, o: ann.run(net, x), "ann", "interactive", "the ANN the SNN approximates"
        ),
    )
}
TSC_ENGINES: tuple[str, ...] = tuple(n for n, e in ENGINES.items() if e.coding == "tsc")
BASELINES: tuple[str, ...] = tuple(sorted(n for n, e in ENGINES.items() if e.coding != "tsc"))  # ann, rate


def engine(name: str) -> Engine:
    """The engine called ``name``; ``ValueError`` naming the choices otherwise."""
    try:
        return ENGINES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}") from None


def run(net: Network, images: Tensor, name: str, options: RunOptions) -> RunResult:
    """Run a batch of pixels in [0, 1] (checked against the network's input) on the engine ``name``."""
    runner = engine(name)
    net.input_spec.check(images)
    with torch.no_grad(), torch.device(net.device):  # tensors the engines create land beside the network's
        return runner.run(net, images.to(net.device), options)


def run_rate(net: Network, images: Tensor, steps: list[int], v0: float = 0.0) -> list[RunResult]:
    """The rate-coded baseline read out after each of ``steps`` in one simulation, neurons from ``v0``."""
    net.input_spec.check(images)
    with torch.no_grad(), torch.device(net.device):
        return rate.run(net, images.to(net.device), sorted(set(steps)), v0)
