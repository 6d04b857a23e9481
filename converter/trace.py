"""Trace a PyTorch model with torch.fx into the population graph of ``converter.graph``.

Conversion is a walk over the fx graph with one rule per module type, function or method (registries
below, extensible with ``register_module``). Each rule turns its inputs into a *value*: a population's
spikes (``Pop``), an affine function of populations (``Affine``), a max-pool awaiting its ReLU, or a
constant. A ReLU of an affine value creates a neuron population; the model's output becomes the
output population. Anything else is refused with a ``ConversionError`` that names the node.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from converter.fold import append_affine, batchnorm_affine
from converter.graph import Graph, Population, Term
from converter.ops import AdaptiveAvgPool2d, AvgPool2d, ChannelAffine, Conv2d, Flatten, Linear, Op, Pad, Slice


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
    pool: dict[str, Any]
    origin: str


@dataclass
class Const:
    """A constant: a tensor attribute of the model or a Python number."""

    value: Any


Value = Pop | Affine | PendingMax | Const | Any  # Any: plain Python values such as sizes
Rule = Callable[["Builder", fx.Node, Any], Value]

MODULE_RULES: dict[type[nn.Module], Rule] = {}
FUNCTION_RULES: dict[Any, Rule] = {}
METHOD_RULES: dict[str, Rule] = {}


def register_module(*types: type[nn.Module]) -> Callable[[Rule], Rule]:
    """Register a conversion rule for module types (a subclass inherits its base's rule)."""

    def deco(rule: Rule) -> Rule:
        for t in types:
            MODULE_RULES[t] = rule
        return rule

    return deco


def _register(table: dict, *keys: Any) -> Callable[[Rule], Rule]:
    def deco(rule: Rule) -> Rule:
        for k in keys:
            table[k] = rule
        return rule

    return deco


class Builder:
    """State of one conversion: fx values, the populations created so far, trained thresholds."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
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
        return ConversionError(f"cannot convert node '{node.name}' ({where}{path}): {why}")

    def arg(self, node: fx.Node, i: int, name: str, default: Any = None) -> Any:
        """Positional-or-keyword argument ``i``/``name`` of a call, resolved to a value when it is a node."""
        a = node.args[i] if i < len(node.args) else node.kwargs.get(name, default)
        return self.resolve(a)

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
        return Affine(
            [
                Term(t.source, append_affine(t.ops, affine if i == 0 else affine.without_bias()))
                for i, t in enumerate(terms)
            ]
        )

    def add_population(self, pop: Population) -> Pop:
        """Register a new population and return its activations."""
        self.populations.append(pop)
        return Pop(pop.name)

    def neuron(
        self, node: fx.Node, v: Value, lam: Tensor | None = None, quantised: list | None = None
    ) -> Pop:
        """A ReLU: a neuron population integrating ``v`` (or ``v`` itself when already non-negative).

        ``lam`` and ``quantised`` ([T, shift]) come from a trained clip-floor activation.
        """
        if isinstance(v, Pop):
            return v
        origin = str(node.target) if node.op == "call_module" else node.name
        if isinstance(v, PendingMax):
            inner = self.add_population(
                Population(
                    f"{node.name}_pre", "neuron", v.shape, v.value.terms, origin=origin, quantised=quantised
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
            )
        )
        if lam is not None:
            self.fixed_lams[pop.name] = lam
        return pop

    def max_pool(self, node: fx.Node, v: Value, pool: dict[str, Any]) -> Value:
        """Max pooling: a switch over a population, or pending until the following ReLU."""
        origin = str(node.target) if node.op == "call_module" else node.name
        if isinstance(v, Pop):
            return self.add_population(
                Population(node.name, "switch", self.shape(node), source=v.name, pool=pool, origin=origin)
            )
        if isinstance(v, Affine):
            return PendingMax(v, self.shape(node.args[0]), pool, origin)
        raise self.fail(node, "max pooling of something that is not an activation tensor")


def _pair(v: Any) -> list[int]:
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def _max_pool_params(
    kernel: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool
) -> dict[str, Any]:
    return {
        "kernel_size": _pair(kernel),
        "stride": _pair(stride if stride not in (None, []) else kernel),
        "padding": _pair(padding),
        "dilation": _pair(dilation),
        "ceil_mode": bool(ceil_mode),
    }


# ---------------------------------------------------------------- modules


@register_module(nn.Conv2d)
def _conv_module(b: Builder, node: fx.Node, m: nn.Conv2d) -> Value:
    if m.padding_mode != "zeros":
        raise b.fail(node, f"padding_mode={m.padding_mode!r}: only zero padding is supported")
    padding = m.padding
    if isinstance(padding, str):  # "valid" or "same"
        pads = (
            [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size, strict=True)]
            if padding == "same"
            else [0, 0]
        )
        if any(p % 2 for p in pads):
            raise b.fail(node, f"padding='same' needs asymmetric padding {pads}, which is not supported")
        padding = [p // 2 for p in pads]
    op = Conv2d(
        weight=m.weight.detach(),
        bias=None if m.bias is None else m.bias.detach(),
        stride=list(m.stride),
        padding=list(padding),
        dilation=list(m.dilation),
        groups=m.groups,
    )
    return b.apply(node, b.tensor(node), op)


@register_module(nn.Linear)
def _linear_module(b: Builder, node: fx.Node, m: nn.Linear) -> Value:
    op = Linear(weight=m.weight.detach(), bias=None if m.bias is None else m.bias.detach())
    return b.apply(node, b.tensor(node), op)


@register_module(nn.BatchNorm1d, nn.BatchNorm2d)
def _bn_module(b: Builder, node: fx.Node, m: nn.modules.batchnorm._BatchNorm) -> Value:
    try:
        affine = batchnorm_affine(m)
    except ValueError as e:
        raise b.fail(node, str(e)) from None
    return b.channel_affine(node, b.tensor(node), affine)


@register_module(nn.ReLU)
def _relu_module(b: Builder, node: fx.Node, m: nn.Module) -> Value:
    return b.neuron(node, b.tensor(node))


@register_module(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
def _identity_module(b: Builder, node: fx.Node, m: nn.Module) -> Value:
    return b.tensor(node)


@register_module(nn.Flatten)
def _flatten_module(b: Builder, node: fx.Node, m: nn.Flatten) -> Value:
    return _flatten(b, node, m.start_dim, m.end_dim)


@register_module(nn.AvgPool2d)
def _avgpool_module(b: Builder, node: fx.Node, m: nn.AvgPool2d) -> Value:
    stride = m.stride if m.stride not in (None, []) else m.kernel_size
    op = AvgPool2d(
        _pair(m.kernel_size),
        _pair(stride),
        _pair(m.padding),
        m.ceil_mode,
        m.count_include_pad,
        m.divisor_override,
    )
    return b.apply(node, b.tensor(node), op)


@register_module(nn.AdaptiveAvgPool2d)
def _adaptive_module(b: Builder, node: fx.Node, m: nn.AdaptiveAvgPool2d) -> Value:
    return b.apply(node, b.tensor(node), AdaptiveAvgPool2d(list(b.shape(node)[-2:])))


@register_module(nn.MaxPool2d)
def _maxpool_module(b: Builder, node: fx.Node, m: nn.MaxPool2d) -> Value:
    if m.return_indices:
        raise b.fail(node, "max pooling with return_indices is not supported")
    return b.max_pool(
        node, b.tensor(node), _max_pool_params(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
    )


# ---------------------------------------------------------------- functions and methods


@_register(FUNCTION_RULES, F.relu, torch.relu, torch.relu_, torch.nn.functional.relu_)
@_register(METHOD_RULES, "relu", "relu_")
def _relu_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return b.neuron(node, b.tensor(node))


@_register(FUNCTION_RULES, F.dropout, F.dropout2d, F.dropout1d, F.alpha_dropout)
@_register(METHOD_RULES, "contiguous", "clone", "detach")
def _identity_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return b.tensor(node)


def _flatten(b: Builder, node: fx.Node, start: int, end: int) -> Value:
    ndim = len(b.shape(node.args[0])) + 1
    if start % ndim != 1 or end % ndim != ndim - 1:
        raise b.fail(node, f"flatten({start}, {end}) must keep the batch dimension and flatten all others")
    return b.apply(node, b.tensor(node), Flatten())


@_register(FUNCTION_RULES, torch.flatten)
@_register(METHOD_RULES, "flatten")
def _flatten_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return _flatten(b, node, b.arg(node, 1, "start_dim", 0), b.arg(node, 2, "end_dim", -1))


@_register(FUNCTION_RULES, torch.reshape)
@_register(METHOD_RULES, "view", "reshape")
def _reshape_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    in_shape, out_shape = b.shape(node.args[0]), b.shape(node)
    if out_shape == in_shape:
        return b.tensor(node)
    if len(out_shape) == 1 and len(in_shape) > 1:
        return b.apply(node, b.tensor(node), Flatten())
    raise b.fail(
        node, f"reshape {in_shape} -> {out_shape}: only flattening to (batch, features) is supported"
    )


@_register(METHOD_RULES, "size", "dim")
@_register(FUNCTION_RULES, getattr)
def _shape_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    """Sizes are static except the batch size, which is ``None`` so that only reshapes may use it."""
    shape = (None, *b.shape(node.args[0]))
    if node.target == "dim":
        return len(shape)
    if node.target is getattr:
        if node.args[1] != "shape":
            raise b.fail(node, f"attribute {node.args[1]!r} of an activation tensor is not supported")
        return shape
    dim = b.arg(node, 1, "dim")
    return shape if dim is None else shape[dim]


@_register(FUNCTION_RULES, F.avg_pool2d)
def _avgpool_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    k = b.arg(node, 1, "kernel_size")
    s = b.arg(node, 2, "stride") or k
    op = AvgPool2d(
        _pair(k),
        _pair(s),
        _pair(b.arg(node, 3, "padding", 0)),
        bool(b.arg(node, 4, "ceil_mode", False)),
        bool(b.arg(node, 5, "count_include_pad", True)),
        b.arg(node, 6, "divisor_override"),
    )
    return b.apply(node, b.tensor(node), op)


@_register(FUNCTION_RULES, F.adaptive_avg_pool2d)
def _adaptive_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return b.apply(node, b.tensor(node), AdaptiveAvgPool2d(list(b.shape(node)[-2:])))


@_register(FUNCTION_RULES, torch.mean)
@_register(METHOD_RULES, "mean")
def _mean_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    dims = b.arg(node, 1, "dim")
    ndim = len(b.shape(node.args[0])) + 1
    if ndim != 4 or dims is None or sorted(d % 4 for d in _pair(dims)) != [2, 3]:
        raise b.fail(node, "mean is supported only over the two spatial dimensions (global average pooling)")
    v = b.apply(node, b.tensor(node), AdaptiveAvgPool2d([1, 1]))
    return v if b.arg(node, 2, "keepdim", False) else b.apply(node, v, Flatten())


@_register(FUNCTION_RULES, F.max_pool2d)
def _maxpool_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    if b.arg(node, 6, "return_indices", False):
        raise b.fail(node, "max pooling with return_indices is not supported")
    k = b.arg(node, 1, "kernel_size")
    params = _max_pool_params(
        k,
        b.arg(node, 2, "stride"),
        b.arg(node, 3, "padding", 0),
        b.arg(node, 4, "dilation", 1),
        b.arg(node, 5, "ceil_mode", False),
    )
    return b.max_pool(node, b.tensor(node), params)


@_register(FUNCTION_RULES, F.pad)
def _pad_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    mode, value = b.arg(node, 2, "mode", "constant"), b.arg(node, 3, "value", None)
    if mode != "constant" or value not in (None, 0, 0.0):
        raise b.fail(node, f"padding mode={mode!r} value={value!r}: only zero padding is linear")
    return b.apply(node, b.tensor(node), Pad(list(b.arg(node, 1, "pad"))))


@_register(FUNCTION_RULES, operator.getitem)
def _getitem_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    base = b.arg(node, 0, "input")
    if isinstance(base, (tuple, list)):
        return base[node.args[1]]
    index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
    if not all(isinstance(s, slice) for s in index) or index[0] != slice(None):
        raise b.fail(node, f"indexing {index!r}: only slicing that keeps the batch dimension is linear here")
    if any(isinstance(x, fx.Node) for s in index for x in (s.start, s.stop, s.step)):
        raise b.fail(node, "slicing with computed bounds is not supported")
    return b.apply(node, b.tensor(node), Slice([[s.start, s.stop, s.step] for s in index[1:]]))


def _channel_const(b: Builder, node: fx.Node, c: Const, ref: fx.Node) -> Tensor:
    """A constant operand as a scalar or per-channel vector for the tensor ``ref``."""
    t = torch.as_tensor(c.value, dtype=torch.float32).detach()
    if t.numel() == 1:
        return t.reshape(())
    channels = b.shape(ref)[0]
    ndim = len(b.shape(ref)) + 1
    squeezed = t.reshape(-1)
    expected = [1, channels] + [1] * (ndim - 2)
    padded = [1] * (ndim - t.dim()) + list(t.shape)
    if squeezed.numel() != channels or padded != expected:
        raise b.fail(node, f"constant of shape {tuple(t.shape)} is not a scalar or per-channel vector")
    return squeezed


def _binary(b: Builder, node: fx.Node, kind: str) -> Value:
    x, y = (
        v if isinstance(v, (Pop, Affine, PendingMax, Const)) else Const(v)
        for v in (b.arg(node, 0, "input"), b.arg(node, 1, "other"))
    )
    alpha = b.arg(node, 2, "alpha", 1)
    tensors = [v for v in (x, y) if isinstance(v, (Pop, Affine, PendingMax))]
    if len(tensors) == 2:
        if kind not in ("add", "sub"):
            raise b.fail(node, f"{kind} of two activation tensors is not linear")
        sign = -1.0 if kind == "sub" else 1.0
        yb = b.affine(node, y)
        if sign * alpha != 1:
            yb = b.channel_affine(node, yb, ChannelAffine(scale=torch.tensor(sign * float(alpha))))
        return Affine(b.affine(node, x).terms + yb.terms)
    if len(tensors) != 1 or not isinstance(x if tensors[0] is y else y, Const):
        raise b.fail(node, f"{kind} with unsupported operands")
    v, c = (x, y) if tensors[0] is x else (y, x)
    ref = node.args[0] if v is x else node.args[1]
    k = _channel_const(b, node, c, ref)
    if kind in ("add", "sub"):
        if kind == "sub" and v is y:  # c - v
            return b.channel_affine(node, v, ChannelAffine(scale=torch.tensor(-1.0), bias=k))
        return b.channel_affine(
            node, v, ChannelAffine(scale=torch.tensor(1.0), bias=k * (-alpha if kind == "sub" else alpha))
        )
    if kind == "mul":
        return b.channel_affine(node, v, ChannelAffine(scale=k))
    if v is y:
        raise b.fail(node, "dividing by an activation tensor is not linear")
    return b.channel_affine(node, v, ChannelAffine(scale=1.0 / k))


for _kind, _fns, _methods in (
    ("add", (operator.add, operator.iadd, torch.add), ("add", "add_")),
    ("sub", (operator.sub, operator.isub, torch.sub), ("sub", "sub_")),
    ("mul", (operator.mul, operator.imul, torch.mul), ("mul", "mul_")),
    ("div", (operator.truediv, operator.itruediv, torch.div), ("div", "div_")),
):

    def _rule(b: Builder, node: fx.Node, _: Any, kind: str = _kind) -> Value:
        return _binary(b, node, kind)

    _register(FUNCTION_RULES, *_fns)(_rule)
    _register(METHOD_RULES, *_methods)(_rule)


# ---------------------------------------------------------------- driver


def _module_rule(m: nn.Module) -> Rule | None:
    for t in type(m).__mro__:
        if t in MODULE_RULES:
            return MODULE_RULES[t]
    return None


class _Tracer(fx.Tracer):
    """fx tracer that keeps every module with a conversion rule (e.g. ``ClipFloor``) as one node."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _module_rule(m) is not None or super().is_leaf_module(m, qualname)


def symbolic_trace(model: nn.Module) -> fx.GraphModule:
    """torch.fx trace of ``model`` with a clear error when Python control flow prevents it."""
    try:
        graph = _Tracer().trace(model)
        return fx.GraphModule(model, graph, type(model).__name__)
    except Exception as e:  # fx raises many exception types for untraceable code
        raise ConversionError(f"torch.fx could not trace {type(model).__name__}: {e}") from None


def trace_model(model: nn.Module, example: Tensor) -> tuple[Graph, dict[str, Tensor]]:
    """Convert ``model`` (eval mode, pixels in [0,1] of ``example``'s shape) into a population graph.

    Returns the graph and the thresholds fixed by trained clip-floor activations, by population.
    """
    model = model.eval()
    gm = symbolic_trace(model)
    ShapeProp(gm).propagate(example[:1])
    b = Builder(gm)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConversionError(f"the model must take exactly one input tensor, it takes {len(placeholders)}")
    out: Value | None = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            b.values[node] = b.add_population(
                Population("input", "input", tuple(example.shape[1:]), origin="input")
            )
        elif node.op == "get_attr":
            b.values[node] = Const(_fetch_attr(gm, node.target))
        elif node.op == "call_module":
            m = b.modules[node.target]
            rule = _module_rule(m)
            if rule is None:
                raise b.fail(node, f"{type(m).__name__} has no TSC equivalent (spec section 4)")
            b.values[node] = rule(b, node, m)
        elif node.op in ("call_function", "call_method"):
            table = FUNCTION_RULES if node.op == "call_function" else METHOD_RULES
            rule = table.get(node.target)
            if rule is None:
                raise b.fail(node, "this operation has no TSC equivalent (spec section 4)")
            b.values[node] = rule(b, node, None)
        elif node.op == "output":
            if not isinstance(node.args[0], fx.Node):
                raise b.fail(node, "the model must return a single tensor of logits")
            out = b.values[node.args[0]]
            node_for_errors = node
    if not isinstance(out, (Pop, Affine, PendingMax)):
        raise ConversionError("the model's output does not depend on its input")
    terms = b.affine(node_for_errors, out).terms
    shape = tuple(node_for_errors.args[0].meta["tensor_meta"].shape[1:])
    if len(shape) != 1:
        raise ConversionError(
            f"the model must return logits of shape (batch, classes), not (batch, *{shape})"
        )
    b.populations.append(Population("output", "output", shape, terms, origin="output"))
    return Graph(_reachable(b.populations)), b.fixed_lams


def _fetch_attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj.detach() if isinstance(obj, Tensor) else obj


def _reachable(pops: list[Population]) -> list[Population]:
    """Populations the output depends on, in their original order."""
    by_name = {p.name: p for p in pops}
    keep: set[str] = set()
    stack = [pops[-1].name]
    while stack:
        p = by_name[stack.pop()]
        if p.name in keep:
            continue
        keep.add(p.name)
        stack.extend([t.source for t in p.terms] + ([p.source] if p.source else []))
    return [p for p in pops if p.name in keep]
