"""Conversion rules: one per module type, function or method, in three registries (spec section 4).

``register_module``, ``register_function`` and ``register_method`` add rules; a rule receives the
``Builder``, the fx node and (for modules) the module, and returns the node's value. A subclass of a
registered module type inherits its rule only if it also inherits its ``forward``: one that changes
``forward`` (an activation inside a BatchNorm, standardised conv weights) must be registered itself.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from converter.fold import batchnorm_affine
from converter.graph import Quantised
from converter.ops import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    ChannelPermutation,
    Conv2d,
    Flatten,
    Linear,
    MaxPool,
    Pad,
    Slice,
)
from converter.quantise import ClipFloor, InputQuant
from converter.trace.arithmetic import binary
from converter.trace.builder import Affine, Builder, PendingMax, Pop, Value

Rule = Callable[[Builder, fx.Node, Any], Value]

MODULE_RULES: dict[type[nn.Module], Rule] = {}
FUNCTION_RULES: dict[Any, Rule] = {}
METHOD_RULES: dict[str, Rule] = {}


def _registrar(table: dict, keys: tuple) -> Callable[[Rule], Rule]:
    """A decorator that files a rule under every key of ``keys`` in ``table``."""

    def deco(rule: Rule) -> Rule:
        for k in keys:
            table[k] = rule
        return rule

    return deco


def register_module(*types: type[nn.Module]) -> Callable[[Rule], Rule]:
    """Register a conversion rule for these module types (and subclasses that keep their ``forward``)."""
    return _registrar(MODULE_RULES, types)


def register_function(*functions: Callable) -> Callable[[Rule], Rule]:
    """Register a conversion rule for calls of these functions (``torch.relu``, ``operator.add``, ...)."""
    return _registrar(FUNCTION_RULES, functions)


def register_method(*names: str) -> Callable[[Rule], Rule]:
    """Register a conversion rule for these tensor methods (``x.relu()``, ``x.view(...)``, ...)."""
    return _registrar(METHOD_RULES, names)


def module_rule(m: nn.Module) -> Rule | None:
    """The rule of ``m``'s type, or of the nearest registered base whose ``forward`` it inherits."""
    for t in type(m).__mro__:
        if t in MODULE_RULES:
            return MODULE_RULES[t] if type(m).forward is t.forward else None
    return None


def rule_for(node: fx.Node, modules: dict[str, nn.Module]) -> Rule | None:
    """The rule converting ``node`` (a module, function or method call), or None if there is none."""
    if node.op == "call_module":
        return module_rule(modules[node.target])
    if node.op == "call_function":
        return FUNCTION_RULES.get(node.target)
    if node.op == "call_method":
        return METHOD_RULES.get(node.target)
    return None


def is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` is converted as a plain ReLU (the activations clip-floor training replaces)."""
    return rule_for(node, modules) in (MODULE_RULES[nn.ReLU], FUNCTION_RULES[F.relu])


def _pair(v: Any) -> list[int]:
    """An int or a pair as a two-element list."""
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def _max_pool(kernel: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool) -> MaxPool:
    """A switch's pooling from ``nn.MaxPool2d``/``F.max_pool2d`` arguments."""
    stride = stride if stride not in (None, []) else kernel
    return MaxPool(_pair(kernel), _pair(stride), _pair(padding), _pair(dilation), bool(ceil_mode))


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
        origin=node.name,
    )
    return b.apply(node, b.tensor(node), op)


@register_module(nn.Linear)
def _linear_module(b: Builder, node: fx.Node, m: nn.Linear) -> Value:
    op = Linear(weight=m.weight.detach(), bias=None if m.bias is None else m.bias.detach(), origin=node.name)
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


def _clipped_relu(b: Builder, node: fx.Node, low: Any, high: Any) -> Value:
    """``clamp(x, low, high)`` as a neuron layer: ``low`` must be 0 (a ReLU), ``high`` a bound or None."""
    if not isinstance(low, (int, float)) or low != 0:
        raise b.fail(
            node, f"a clamp with lower bound {low!r} is not a ReLU; only a lower bound of 0 converts"
        )
    if high is not None and (not isinstance(high, (int, float)) or high <= 0):
        raise b.fail(node, f"a clipped ReLU needs a positive upper bound, got {high!r}")
    return b.neuron(node, b.tensor(node), clip=None if high is None else float(high))


@register_module(nn.ReLU6)
def _relu6_module(b: Builder, node: fx.Node, m: nn.ReLU6) -> Value:
    return _clipped_relu(b, node, 0, 6.0)


@register_module(nn.Hardtanh)
def _hardtanh_module(b: Builder, node: fx.Node, m: nn.Hardtanh) -> Value:
    return _clipped_relu(b, node, m.min_val, m.max_val)


@register_module(nn.Threshold)
def _threshold_module(b: Builder, node: fx.Node, m: nn.Threshold) -> Value:
    if m.threshold != 0 or m.value != 0:
        raise b.fail(node, f"Threshold({m.threshold}, {m.value}) is a ReLU only as Threshold(0, 0)")
    return _clipped_relu(b, node, 0, None)


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
        node, b.tensor(node), _max_pool(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
    )


# ---------------------------------------------------------------- functions and methods


@register_function(F.relu, torch.relu, torch.relu_, torch.nn.functional.relu_)
@register_method("relu", "relu_")
def _relu_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return b.neuron(node, b.tensor(node))


@register_function(F.relu6)
def _relu6_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return _clipped_relu(b, node, 0, 6.0)


@register_function(F.hardtanh, F.hardtanh_)
def _hardtanh_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return _clipped_relu(b, node, b.arg(node, 1, "min_val", -1.0), b.arg(node, 2, "max_val", 1.0))


@register_function(torch.clamp, torch.clip, torch.clamp_min)
@register_method("clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_min_")
def _clamp_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    if getattr(node.target, "__name__", node.target) in ("clamp_min", "clamp_min_"):
        return _clipped_relu(b, node, b.arg(node, 1, "min"), None)
    return _clipped_relu(b, node, b.arg(node, 1, "min"), b.arg(node, 2, "max"))


@register_function(F.threshold)
def _threshold_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    threshold, value = b.arg(node, 1, "threshold"), b.arg(node, 2, "value")
    if threshold != 0 or value != 0:
        raise b.fail(node, f"threshold({threshold}, {value}) is a ReLU only as threshold(0, 0)")
    return _clipped_relu(b, node, 0, None)


@register_function(F.dropout, F.dropout2d, F.dropout1d, F.alpha_dropout)
@register_method("contiguous", "clone", "detach")
def _identity_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return b.tensor(node)


def _flatten(b: Builder, node: fx.Node, start: int, end: int) -> Value:
    ndim = len(b.shape(node.args[0])) + 1
    if start % ndim != 1 or end % ndim != ndim - 1:
        raise b.fail(node, f"flatten({start}, {end}) must keep the batch dimension and flatten all others")
    return b.apply(node, b.tensor(node), Flatten())


@register_function(torch.flatten)
@register_method("flatten")
def _flatten_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return _flatten(b, node, b.arg(node, 1, "start_dim", 0), b.arg(node, 2, "end_dim", -1))


@register_function(torch.reshape)
@register_method("view", "reshape")
def _reshape_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    in_shape, out_shape = b.shape(node.args[0]), b.shape(node)
    if out_shape == in_shape:
        return b.tensor(node)
    if len(out_shape) == 1 and len(in_shape) > 1:
        return b.apply(node, b.tensor(node), Flatten())
    raise b.fail(
        node, f"reshape {in_shape} -> {out_shape}: only flattening to (batch, features) is supported"
    )


@register_method("size", "dim")
@register_function(getattr)
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


@register_function(F.avg_pool2d)
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


@register_function(F.adaptive_avg_pool2d)
def _adaptive_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return b.apply(node, b.tensor(node), AdaptiveAvgPool2d(list(b.shape(node)[-2:])))


@register_function(torch.mean)
@register_method("mean")
def _mean_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    dims = b.arg(node, 1, "dim")
    ndim = len(b.shape(node.args[0])) + 1
    if ndim != 4 or dims is None or sorted(d % 4 for d in _pair(dims)) != [2, 3]:
        raise b.fail(node, "mean is supported only over the two spatial dimensions (global average pooling)")
    v = b.apply(node, b.tensor(node), AdaptiveAvgPool2d([1, 1]))
    return v if b.arg(node, 2, "keepdim", False) else b.apply(node, v, Flatten())


@register_function(F.max_pool2d)
def _maxpool_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    if b.arg(node, 6, "return_indices", False):
        raise b.fail(node, "max pooling with return_indices is not supported")
    k = b.arg(node, 1, "kernel_size")
    params = _max_pool(
        k,
        b.arg(node, 2, "stride"),
        b.arg(node, 3, "padding", 0),
        b.arg(node, 4, "dilation", 1),
        b.arg(node, 5, "ceil_mode", False),
    )
    return b.max_pool(node, b.tensor(node), params)


@register_function(torch.cat, torch.concat, torch.concatenate)
def _cat_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    """Channel concatenation: the union of populations, each term zero-padded to its channel range."""
    parts, dim = b.arg(node, 0, "tensors"), b.arg(node, 1, "dim", 0)
    ndim = len(b.shape(node)) + 1
    if not isinstance(dim, int) or dim % ndim != 1:
        raise b.fail(node, f"concatenation along dim {dim}: only the channel dimension (1) is supported")
    inputs = node.args[0] if node.args else node.kwargs["tensors"]
    sizes = [b.shape(n)[0] if isinstance(n, fx.Node) else None for n in inputs]
    if any(s is None for s in sizes) or not all(isinstance(v, (Pop, Affine, PendingMax)) for v in parts):
        raise b.fail(node, "every operand of a concatenation must be an activation tensor")
    total, before, terms = sum(sizes), 0, []
    for v, size in zip(parts, sizes, strict=True):
        pad = Pad([0, 0] * (ndim - 2) + [before, total - before - size])
        terms += b.apply(node, v, pad).terms
        before += size
    return Affine(terms)


def _shuffle(b: Builder, node: fx.Node, groups: Any) -> Value:
    """Channel shuffle in ``groups``: output channel ``g * G + j`` is input channel ``j * C / G + g``."""
    channels = b.shape(node)[0]
    if not isinstance(groups, int) or groups < 1 or channels % groups:
        raise b.fail(node, f"channel shuffle needs a group count dividing {channels}, got {groups!r}")
    per_group = channels // groups
    order = [j * per_group + g for g in range(per_group) for j in range(groups)]
    return b.apply(node, b.tensor(node), ChannelPermutation(order))


@register_module(nn.ChannelShuffle)
def _shuffle_module(b: Builder, node: fx.Node, m: nn.ChannelShuffle) -> Value:
    return _shuffle(b, node, m.groups)


@register_function(F.channel_shuffle, torch.channel_shuffle)
def _shuffle_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return _shuffle(b, node, b.arg(node, 1, "groups"))


@register_function(F.pad)
def _pad_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    mode, value = b.arg(node, 2, "mode", "constant"), b.arg(node, 3, "value", None)
    if mode != "constant" or value not in (None, 0, 0.0):
        raise b.fail(node, f"padding mode={mode!r} value={value!r}: only zero padding is linear")
    return b.apply(node, b.tensor(node), Pad(list(b.arg(node, 1, "pad"))))


@register_function(operator.getitem)
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


for _kind, _fns, _methods in (
    ("add", (operator.add, operator.iadd, torch.add), ("add", "add_")),
    ("sub", (operator.sub, operator.isub, torch.sub), ("sub", "sub_")),
    ("mul", (operator.mul, operator.imul, torch.mul), ("mul", "mul_")),
    ("div", (operator.truediv, operator.itruediv, torch.div), ("div", "div_")),
):

    def _rule(b: Builder, node: fx.Node, _: Any, kind: str = _kind) -> Value:
        return binary(b, node, kind)

    register_function(*_fns)(_rule)
    register_method(*_methods)(_rule)


@register_module(ClipFloor)
def _clipfloor_rule(b: Builder, node: fx.Node, m: ClipFloor) -> Value:
    return b.neuron(node, b.tensor(node), lam=m.threshold().detach(), quantised=Quantised(m.T, m.shift))


@register_module(InputQuant)
def _inputquant_rule(b: Builder, node: fx.Node, m: InputQuant) -> Value:
    v = b.tensor(node)
    if isinstance(v, Pop) and v.name == "input":  # the trained ANN saw quantised pixels
        b.populations[0].quantised = Quantised(m.T, m.shift)
    return v
