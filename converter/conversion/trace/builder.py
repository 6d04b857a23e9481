"""The state of one conversion: the values fx nodes take, and the populations created so far.

A value is a population's spikes (``Pop``), an affine function of populations (``Affine``, a
pre-activation), a max-pool awaiting its ReLU (``PendingMax``), or a constant. Rules
(``trace.rules``) turn their inputs into values through the ``Builder``; a ReLU of an affine
value creates a neuron population.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, fx

from converter.snn.fold import append_affine
from converter.snn.graph import Population, Quantised, Term
from converter.snn.ops import ChannelAffine, MaxPool, Op, Pad


class ConversionError(ValueError):
    """The model contains something TSC cannot represent; the message names the node and why."""


@dataclass
class Pop:
    """The (non-negative) activations of a population."""

    name: str


@dataclass
class Affine:
    """A sum of affine paths from populations: a pre-activation."""

    terms: list[Term]


@dataclass
class PendingMax:
    """Max pooling applied to a pre-activation; becomes neuron layer + switch at the following ReLU."""

    value: Affine
    shape: tuple[int, ...]
    pool: MaxPool
    origin: str


@dataclass
class Const:
    """A constant: a tensor attribute of the model or a Python number."""

    value: Any


Value = Pop | Affine | PendingMax | Const | Any  # Any: plain Python values such as sizes


class Builder:
    """State of one conversion: fx values, the populations created so far, trained thresholds."""

    def __init__(self, gm: fx.GraphModule, device: torch.device | None = None) -> None:
        """An empty conversion of the traced module ``gm`` (run on ``device``)."""
        self.gm = gm
        self.device = device or torch.device("cpu")
        self.values: dict[fx.Node, Value] = {}
        self.populations: list[Population] = []
        self.fixed_lams: dict[str, Tensor] = {}
        self.modules = dict(gm.named_modules())

    def fail(self, node: fx.Node, why: str) -> ConversionError:
        """An error naming the node, its op and module path."""
        where = (
            f"module '{node.target}' ({type(self.modules[node.target]).__name__})"
            if (node.op == "call_module")
            else f"{node.op} {getattr(node.target, '__name__', node.target)}"
        )
        stack = node.meta.get("nn_module_stack")
        path = f", inside {list(stack)[-1]}" if stack else ""
        return ConversionError(f"cannot convert node '{node.name}' ({where}{path}){_source(node)}: {why}")

    def arg(self, node: fx.Node, i: int, name: str, default: Any = None) -> Any:
        """Positional-or-keyword argument ``i``/``name`` of a call, resolved to a value when it is a node."""
        return self.resolve(self.raw_arg(node, i, name, default))

    def raw_arg(self, node: fx.Node, i: int, name: str, default: Any = None) -> Any:
        """Positional-or-keyword argument ``i``/``name`` of a call as the graph has it (nodes unresolved)."""
        return node.args[i] if i < len(node.args) else node.kwargs.get(name, default)

    def folded(self, node: fx.Node) -> tuple[bool, Any]:
        """``(True, value)`` for a call on constants only, computed now (``torch.tensor(mean,
        device=x.device)``, ``self.mean.view(1, 3, 1, 1)``); ``(False, None)`` when an activation or the
        unknown batch size goes into it."""
        inputs = [self.values[n] for n in node.all_input_nodes]
        if node.op not in ("call_function", "call_method") or not all(map(_constant, inputs)):
            return False, None
        args = _unwrap(self.resolve(node.args))
        kwargs = {k: _unwrap(self.resolve(v)) for k, v in node.kwargs.items()}
        if node.op == "call_method":
            value = getattr(args[0], str(node.target))(*args[1:], **kwargs)
        else:
            value = node.target(*args, **kwargs)
        return True, Const(value) if isinstance(value, Tensor) else value

    def resolve(self, a: Any) -> Any:
        """Values for nodes (recursively in tuples/lists), plain Python otherwise."""
        if isinstance(a, fx.Node):
            return self.values[a]
        if isinstance(a, (tuple, list)):
            return type(a)(self.resolve(x) for x in a)
        return a

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        """Per-image output shape of a node (from shape propagation)."""
        return tuple(node.meta["tensor_meta"].shape[1:])

    def keeps_batch(self, node: fx.Node) -> bool:
        """Whether a node's output keeps the batch (of two images, in shape propagation) in dimension 0."""
        return node.meta["tensor_meta"].shape[0] == 2

    def tensor(self, node: fx.Node, i: int = 0, name: str = "input") -> Pop | Affine | PendingMax:
        """The tensor operand of a call; refuses constants and shapes."""
        v = self.arg(node, i, name)
        if not isinstance(v, (Pop, Affine, PendingMax)):
            raise self.fail(node, f"operand {i} is not an activation tensor")
        return v

    def affine(self, node: fx.Node, v: Value) -> Affine:
        """View a value as an affine function of populations."""
        if isinstance(v, Pop):
            return Affine([Term(v.name, [])])
        if isinstance(v, Affine):
            return v
        if isinstance(v, PendingMax):
            raise self.fail(node, "max pooling must be followed by a ReLU before any other operation")
        raise self.fail(node, "operand is not an activation tensor")

    def apply(self, node: fx.Node, v: Value, op: Op) -> Affine:
        """Append an op to every term of a value; its offset is kept on the first term only."""
        terms = self.affine(node, v).terms
        return Affine(
            [Term(t.source, [*t.ops, op if i == 0 else op.without_bias()]) for i, t in enumerate(terms)]
        )

    def channel_affine(self, node: fx.Node, v: Value, affine: ChannelAffine) -> Affine:
        """Apply a per-channel affine map, folding it into the last conv/linear of each term."""
        terms = self.affine(node, v).terms
        features = len(self.shape(node)) == 1  # channels are a linear op's outputs only when alone
        return Affine(
            [
                Term(t.source, append_affine(t.ops, affine if i == 0 else affine.without_bias(), features))
                for i, t in enumerate(terms)
            ]
        )

    def add_population(self, pop: Population) -> Pop:
        """Register a new population and return its activations."""
        self.populations.append(pop)
        return Pop(pop.name)

    def neuron(
        self,
        node: fx.Node,
        v: Value,
        lam: Tensor | None = None,
        quantised: Quantised | None = None,
        clip: float | None = None,
    ) -> Pop:
        """A ReLU: a neuron population integrating ``v`` (or ``v`` itself when already non-negative).

        ``lam`` and ``quantised`` come from a trained clip-floor activation; ``clip`` is the upper bound
        of a clipped ReLU (ReLU6, ``clamp(0, c)``), which caps the layer's threshold.
        """
        if isinstance(v, Pop) and clip is None:
            return v
        origin = str(node.target) if node.op == "call_module" else node.name
        if isinstance(v, PendingMax):
            inner = self.add_population(
                Population(
                    f"{node.name}_pre",
                    "neuron",
                    v.shape,
                    v.value.terms,
                    origin=origin,
                    quantised=quantised,
                    clip=clip,
                )
            )
            if lam is not None:
                self.fixed_lams[inner.name] = lam
            return self.add_population(
                Population(
                    node.name, "switch", self.shape(node), source=inner.name, pool=v.pool, origin=v.origin
                )
            )
        pop = self.add_population(
            Population(
                node.name,
                "neuron",
                self.shape(node),
                self.affine(node, v).terms,
                origin=origin,
                quantised=quantised,
                clip=clip,
            )
        )
        if lam is not None:
            self.fixed_lams[pop.name] = lam
        return pop

    def max_pool(self, node: fx.Node, v: Value, pool: MaxPool) -> Value:
        """Max pooling: a switch over a population, or pending until the following ReLU."""
        origin = str(node.target) if node.op == "call_module" else node.name
        if isinstance(v, Pop):
            return self.add_population(
                Population(node.name, "switch", self.shape(node), source=v.name, pool=pool, origin=origin)
            )
        if isinstance(v, Affine):
            parts = _concatenated(v, {p.name: p.shape[0] for p in self.populations})
            if parts is None:
                return PendingMax(v, self.shape(node.args[0]), pool, origin)
            out, terms = self.shape(node), []  # pooling acts per channel: each population pooled apart
            for i, (source, pad) in enumerate(parts):
                shape = (out[0] - pad.pad[-2] - pad.pad[-1], *out[1:])
                name = f"{node.name}_{i}"
                switch = Population(name, "switch", shape, source=source, pool=pool, origin=origin)
                terms.append(Term(self.add_population(switch).name, [pad]))
            return Affine(terms)
        raise self.fail(node, "max pooling of something that is not an activation tensor")


TORCH_DIR = Path(torch.__file__).parent


def _constant(v: Any) -> bool:
    """Whether a value is known now: no activation and not the unknown batch size (None) in it."""
    if isinstance(v, (tuple, list)):
        return all(map(_constant, v))
    return v is not None and not isinstance(v, (Pop, Affine, PendingMax))


def _unwrap(a: Any) -> Any:
    """Constants as their plain values (recursively in tuples and lists)."""
    if isinstance(a, Const):
        return a.value
    if isinstance(a, (tuple, list)):
        return type(a)(_unwrap(x) for x in a)
    return a


def _source(node: fx.Node) -> str:
    """`` at FILE:LINE: CODE``, the user's line that made ``node`` (from fx's recorded stack), if known."""
    lines = (node.meta.get("stack_trace") or "").strip().splitlines()
    for i in reversed(range(len(lines))):
        head = lines[i].strip()  # File "x.py", line 12, in forward
        if not head.startswith('File "') or ", line " not in head:
            continue
        file, line = head.split('"')[1], head.split(", line ")[1].split(",")[0]
        if Path(file).is_relative_to(TORCH_DIR):
            continue
        code = lines[i + 1].strip() if i + 1 < len(lines) else ""
        return f" at {file}:{line}" + (f": {code}" if code else "")
    return ""


def _concatenated(v: Affine, channels: dict[str, int]) -> list[tuple[str, Pad]] | None:
    """The populations and channel paddings of a channel concatenation of populations, else None."""
    ranges = []
    for t in v.terms:
        if len(t.ops) != 1 or not isinstance(t.ops[0], Pad) or any(t.ops[0].pad[:-2]):
            return None
        ranges.append((t.ops[0].pad[-2], t.ops[0].pad[-2] + channels[t.source]))
    ranges.sort()
    if any(a[1] > b[0] for a, b in itertools.pairwise(ranges)):
        return None  # overlapping channels: a sum, not a concatenation
    return [(t.source, t.ops[0]) for t in v.terms]
