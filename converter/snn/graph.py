"""The graph the engines run: populations of neurons joined by affine synapse paths (spec sections 1 and 4).

A population is the input pixels, a layer of TSC neurons (a ReLU of the ANN), a max-pool switch, or the
output layer. A neuron or output population integrates the sum of its *terms*; a term is a source
population seen through a chain of affine ops (conv, linear, folded BN, pooling, flatten, slicing, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import Tensor

from converter.snn.ops import MaxPool, Op, op_from_spec, run_chain

Kind = Literal["input", "neuron", "switch", "output"]
KINDS: tuple[str, ...] = get_args(Kind)


class Quantised(NamedTuple):
    """How the trained ANN itself clip-floor quantised an activation: ``T`` levels and the shift."""

    T: int
    shift: float


@dataclass
class Term:
    """One synapse path into a population: ``ops`` applied to the activations of ``source``."""

    source: str
    ops: list[Op]


@dataclass
class Population:
    """A group of neurons (or pixels, or switches) that share a speaking window."""

    name: str
    kind: Kind
    shape: tuple[int, ...] = ()  # per image
    terms: list[Term] = field(default_factory=list)  # neuron / output
    source: str | None = None  # switch: the population it pools
    pool: MaxPool | None = None  # switch: its max pooling
    origin: str = ""  # where it came from in the traced model (module path or node)
    stage: int = 0  # which window it speaks in, counted along the longest path (output: integrates in)
    quantised: Quantised | None = None  # set when the trained ANN itself clip-floor quantised it
    clip: float | None = None  # neuron: the ANN clips its activation at this value (ReLU6: 6)

    @property
    def size(self) -> int:
        """Number of neurons for one image."""
        return math.prod(self.shape)


@dataclass
class Graph:
    """Populations in topological order; the last one is the output layer."""

    populations: list[Population]

    def __post_init__(self) -> None:
        self.by_name = {p.name: p for p in self.populations}
        self._assign_stages()

    @property
    def output(self) -> Population:
        """The output (logits) population."""
        return self.populations[-1]

    @property
    def neurons(self) -> list[Population]:
        """The spiking neuron layers, in order."""
        return [p for p in self.populations if p.kind == "neuron"]

    @property
    def depth(self) -> int:
        """L: weight layers on the longest path (the output integrates in window L-1)."""
        return self.output.stage + 1

    def _assign_stages(self) -> None:
        for p in self.populations:
            if p.kind == "switch":
                p.stage = self.by_name[p.source].stage
            elif p.kind in ("neuron", "output"):
                latest = max(self.by_name[t.source].stage for t in p.terms)
                p.stage = latest + 1 if p.kind == "neuron" else latest

    def tensors(self) -> Iterator[Tensor]:
        """Every tensor of every op, in population order."""
        for p in self.populations:
            for t in p.terms:
                for op in t.ops:
                    yield from op.tensors().values()

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Graph:
        """Copy with every op tensor cast to ``dtype`` and/or moved to ``device``."""
        return self.map_ops(lambda op: op.to(dtype, device))

    def map_ops(self, change: Callable[[Op], Op]) -> Graph:
        """Copy with every op of every synapse path replaced by ``change(op)``."""
        pops = [
            replace(p, terms=[Term(t.source, [change(op) for op in t.ops]) for t in p.terms])
            for p in self.populations
        ]
        return Graph(pops)

    def offsets(self, target: Population, dtype: torch.dtype) -> Tensor:
        """The constant input of a population (its bias per neuron): the terms applied to zero activity."""
        total = torch.zeros(1, *target.shape, dtype=dtype)
        for t in target.terms:
            src = self.by_name[t.source]
            total = total + run_chain(t.ops, torch.zeros(1, *src.shape, dtype=dtype))
        return total

    def to_spec(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """JSON description and the named tensors it refers to."""
        tensors: dict[str, Tensor] = {}
        pops = []
        for p in self.populations:
            terms = []
            for ti, t in enumerate(p.terms):
                ops = []
                for oi, op in enumerate(t.ops):
                    refs = {}
                    for role, tensor in op.tensors().items():
                        key = f"{p.name}.{ti}.{oi}.{role}"
                        tensors[key] = tensor
                        refs[role] = key
                    ops.append({"kind": op.kind, "params": op.params(), "tensors": refs})
                terms.append({"source": t.source, "ops": ops})
            pops.append(
                {
                    "name": p.name,
                    "kind": p.kind,
                    "shape": list(p.shape),
                    "terms": terms,
                    "source": p.source,
                    "pool": p.pool.params() if p.pool else {},
                    "origin": p.origin,
                    "quantised": p.quantised,
                    "clip": p.clip,
                }
            )
        return {"populations": pops}, tensors

    @classmethod
    def from_spec(cls, spec: dict[str, Any], tensors: dict[str, Tensor]) -> Graph:
        """Rebuild a graph from ``to_spec`` output."""
        pops = []
        for p in spec["populations"]:
            if p["kind"] not in KINDS:
                raise ValueError(f"population {p['name']!r} has unknown kind {p['kind']!r}")
            terms = [
                Term(
                    t["source"],
                    [
                        op_from_spec(o["kind"], o["params"], {r: tensors[k] for r, k in o["tensors"].items()})
                        for o in t["ops"]
                    ],
                )
                for t in p["terms"]
            ]
            pops.append(
                Population(
                    p["name"],
                    p["kind"],
                    tuple(p["shape"]),
                    terms,
                    p["source"],
                    MaxPool(**p["pool"]) if p["pool"] else None,
                    p.get("origin", ""),
                    quantised=Quantised(*p["quantised"]) if p.get("quantised") else None,
                    clip=p.get("clip"),
                )
            )
        return cls(pops)
