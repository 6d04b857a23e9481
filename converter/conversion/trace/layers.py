"""Conversion rules of layers: conv, linear, BatchNorm, the ReLU family, pooling, upsampling, dropout.

Each rule receives the ``Builder``, the fx node and (for modules) the module, and returns the node's
value; ``MODULES``, ``FUNCTIONS`` and ``METHODS`` list them for the registry (``trace.rules``).
A ReLU of an affine value makes a neuron layer; a clipped ReLU (``ReLU6``, ``clamp(0, c)``) one whose
threshold is capped at ``c``; max pooling a switch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from converter.conversion.trace.builder import Affine, Builder, Const, PendingMax, Pop, Value
from converter.snn.fold import batchnorm_affine
from converter.snn.graph import Quantised
from converter.snn.ops import AdaptiveAvgPool2d, AvgPool2d, Conv2d, Linear, MaxPool, UpsampleNearest
from converter.snn.quantise import ClipFloor, InputQuant

Rule = Callable[[Builder, fx.Node, Any], Value]


def pair(v: Any) -> list[int]:
    """An int or a pair as a two-element list."""
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def _max_pool(kernel: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool) -> MaxPool:
    """A switch's pooling from ``nn.MaxPool2d``/``F.max_pool2d`` arguments."""
    stride = stride if stride not in (None, []) else kernel
    return MaxPool(pair(kernel), pair(stride), pair(padding), pair(dilation), bool(ceil_mode))


def _conv_module(b: Builder, node: fx.Node, m: nn.Conv2d) -> Value:
    if m.padding_mode != "zeros":
        raise b.fail(node, f"padding_mode={m.padding_mode!r}: only zero padding is supported")
    return conv(b, node, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)


def conv(
    b: Builder,
    node: fx.Node,
    weight: Tensor,
    bias: Tensor | None,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: int,
) -> Value:
    """A 2-d convolution of the node's input (zero padding given as sizes, ``"valid"`` or ``"same"``)."""
    kernel = weight.shape[2:]
    if isinstance(padding, str):  # "valid" or "same"
        pads = (
            [d * (k - 1) for d, k in zip(pair(dilation), kernel, strict=True)]
            if padding == "same"
            else [0, 0]
        )
        if any(p % 2 for p in pads):
            raise b.fail(node, f"padding='same' needs asymmetric padding {pads}, which is not supported")
        padding = [p // 2 for p in pads]
    op = Conv2d(
        weight=weight.detach(),
        bias=None if bias is None else bias.detach(),
        stride=pair(stride),
        padding=pair(padding),
        dilation=pair(dilation),
        groups=groups,
        origin=node.name,
    )
    return b.apply(node, b.tensor(node), op)


def _linear_module(b: Builder, node: fx.Node, m: nn.Linear) -> Value:
    op = Linear(weight=m.weight.detach(), bias=None if m.bias is None else m.bias.detach(), origin=node.name)
    return b.apply(node, b.tensor(node), op)


def _bn_module(b: Builder, node: fx.Node, m: nn.modules.batchnorm._BatchNorm) -> Value:
    try:
        affine = batchnorm_affine(m)
    except ValueError as e:
        raise b.fail(node, str(e)) from None
    return b.channel_affine(node, b.tensor(node), affine)


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


def _relu6_module(b: Builder, node: fx.Node, m: nn.ReLU6) -> Value:
    return _clipped_relu(b, node, 0, 6.0)


def _hardtanh_module(b: Builder, node: fx.Node, m: nn.Hardtanh) -> Value:
    return _clipped_relu(b, node, m.min_val, m.max_val)


def _threshold_module(b: Builder, node: fx.Node, m: nn.Threshold) -> Value:
    if m.threshold != 0 or m.value != 0:
        raise b.fail(node, f"Threshold({m.threshold}, {m.value}) is a ReLU only as Threshold(0, 0)")
    return _clipped_relu(b, node, 0, None)


def _identity_module(b: Builder, node: fx.Node, m: nn.Module) -> Value:
    return b.tensor(node)


def _avgpool_module(b: Builder, node: fx.Node, m: nn.AvgPool2d) -> Value:
    stride = m.stride if m.stride not in (None, []) else m.kernel_size
    op = AvgPool2d(
        pair(m.kernel_size),
        pair(stride),
        pair(m.padding),
        m.ceil_mode,
        m.count_include_pad,
        m.divisor_override,
    )
    return b.apply(node, b.tensor(node), op)


def _adaptive(b: Builder, node: fx.Node, _: Any) -> Value:
    """Adaptive average pooling; the identity when the input already has the output's size (VGG-16 at 224:
    7x7 to 7x7), so that no op stands between the last pooling and the classifier's synapses."""
    out, source = list(b.shape(node)[-2:]), node.args[0]
    if isinstance(source, fx.Node) and list(b.shape(source)[-2:]) == out:
        return b.tensor(node)
    return b.apply(node, b.tensor(node), AdaptiveAvgPool2d(out))


def _maxpool_module(b: Builder, node: fx.Node, m: nn.MaxPool2d) -> Value:
    if m.return_indices:
        raise b.fail(node, "max pooling with return_indices is not supported")
    return b.max_pool(
        node, b.tensor(node), _max_pool(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
    )


def _adaptive_max(b: Builder, node: fx.Node, _: Any) -> Value:
    """Adaptive max pooling to a size that divides the input's: max pooling with kernel = stride."""
    if b.arg(node, 2, "return_indices", getattr(b.modules.get(node.target), "return_indices", False)):
        raise b.fail(node, "max pooling with return_indices is not supported")
    (h, w), (oh, ow) = b.shape(node.args[0])[-2:], b.shape(node)[-2:]
    if h % oh or w % ow:
        raise b.fail(
            node,
            f"adaptive max pooling from {h}x{w} to {oh}x{ow} uses windows of unequal sizes; pool to a size "
            "that divides the input's, or use nn.MaxPool2d",
        )
    kernel = [h // oh, w // ow]
    return b.max_pool(node, b.tensor(node), _max_pool(kernel, kernel, 0, 1, False))


def _relu_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return b.neuron(node, b.tensor(node))


def _maximum_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    """``torch.maximum(x, 0)`` (either order, zero as a number or a constant tensor): a ReLU."""
    x, y = b.arg(node, 0, "input"), b.arg(node, 1, "other")
    for v, k in ((x, y), (y, x)):
        k = k.value if isinstance(k, Const) else k
        zero = isinstance(k, (int, float, torch.Tensor)) and not bool(torch.as_tensor(k).any())
        if isinstance(v, (Pop, Affine, PendingMax)) and zero:
            return b.neuron(node, v)
    raise b.fail(node, "maximum of an activation with anything but zero is not a ReLU")


def _relu6_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return _clipped_relu(b, node, 0, 6.0)


def _hardtanh_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return _clipped_relu(b, node, b.arg(node, 1, "min_val", -1.0), b.arg(node, 2, "max_val", 1.0))


def _clamp_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    if getattr(node.target, "__name__", node.target) in ("clamp_min", "clamp_min_"):
        return _clipped_relu(b, node, b.arg(node, 1, "min"), None)
    return _clipped_relu(b, node, b.arg(node, 1, "min"), b.arg(node, 2, "max"))


def _threshold_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    threshold, value = b.arg(node, 1, "threshold"), b.arg(node, 2, "value")
    if threshold != 0 or value != 0:
        raise b.fail(node, f"threshold({threshold}, {value}) is a ReLU only as threshold(0, 0)")
    return _clipped_relu(b, node, 0, None)


def _identity_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return b.tensor(node)


def _avgpool_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    k = b.arg(node, 1, "kernel_size")
    s = b.arg(node, 2, "stride") or k
    op = AvgPool2d(
        pair(k),
        pair(s),
        pair(b.arg(node, 3, "padding", 0)),
        bool(b.arg(node, 4, "ceil_mode", False)),
        bool(b.arg(node, 5, "count_include_pad", True)),
        b.arg(node, 6, "divisor_override"),
    )
    return b.apply(node, b.tensor(node), op)


def _upsample(b: Builder, node: fx.Node, mode: str) -> Value:
    """Nearest upsampling by integer factors (read from the shapes); other modes are refused."""
    in_shape, out_shape = b.shape(node.args[0]), b.shape(node)
    why = f"upsampling {in_shape} -> {out_shape} ({mode}): only nearest by integer factors"
    if mode != "nearest" or len(in_shape) != 3 or len(out_shape) != 3:
        raise b.fail(node, why)
    scale = [o // i for o, i in zip(out_shape[1:], in_shape[1:], strict=True)]
    if [s * i for s, i in zip(scale, in_shape[1:], strict=True)] != list(out_shape[1:]):
        raise b.fail(node, why)
    return b.apply(node, b.tensor(node), UpsampleNearest(scale))


def _upsample_module(b: Builder, node: fx.Node, m: nn.Upsample) -> Value:
    return _upsample(b, node, m.mode)


def _interpolate_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return _upsample(b, node, b.arg(node, 3, "mode", "nearest"))


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


def _clipfloor_rule(b: Builder, node: fx.Node, m: ClipFloor) -> Value:
    return b.neuron(node, b.tensor(node), lam=m.threshold().detach(), quantised=Quantised(m.T, m.shift))


def _inputquant_rule(b: Builder, node: fx.Node, m: InputQuant) -> Value:
    v = b.tensor(node)
    if isinstance(v, Pop) and v.name == "input":  # the trained ANN saw quantised pixels
        b.populations[0].quantised = Quantised(m.T, m.shift)
    return v


MODULES: dict[type[nn.Module], Rule] = {
    nn.Conv2d: _conv_module,
    nn.Linear: _linear_module,
    nn.BatchNorm1d: _bn_module,
    nn.BatchNorm2d: _bn_module,
    nn.ReLU: _relu_module,
    nn.ReLU6: _relu6_module,
    nn.Hardtanh: _hardtanh_module,
    nn.Threshold: _threshold_module,
    nn.Dropout: _identity_module,
    nn.Dropout1d: _identity_module,
    nn.Dropout2d: _identity_module,
    nn.AlphaDropout: _identity_module,
    nn.Identity: _identity_module,
    nn.AvgPool2d: _avgpool_module,
    nn.AdaptiveAvgPool2d: _adaptive,
    nn.MaxPool2d: _maxpool_module,
    nn.AdaptiveMaxPool2d: _adaptive_max,
    nn.Upsample: _upsample_module,
    ClipFloor: _clipfloor_rule,
    InputQuant: _inputquant_rule,
}
FUNCTIONS: dict[Any, Rule] = {
    F.relu: _relu_fn,
    torch.relu: _relu_fn,
    torch.relu_: _relu_fn,
    torch.maximum: _maximum_fn,
    torch.nn.functional.relu_: _relu_fn,
    F.relu6: _relu6_fn,
    F.hardtanh: _hardtanh_fn,
    F.hardtanh_: _hardtanh_fn,
    torch.clamp: _clamp_fn,
    torch.clip: _clamp_fn,
    torch.clamp_min: _clamp_fn,
    F.threshold: _threshold_fn,
    F.dropout: _identity_fn,
    F.dropout2d: _identity_fn,
    F.dropout1d: _identity_fn,
    F.alpha_dropout: _identity_fn,
    F.avg_pool2d: _avgpool_fn,
    F.adaptive_avg_pool2d: _adaptive,
    F.interpolate: _interpolate_fn,
    F.max_pool2d: _maxpool_fn,
    F.adaptive_max_pool2d: _adaptive_max,
}
METHODS: dict[str, Rule] = {
    "relu": _relu_fn,
    "relu_": _relu_fn,
    "maximum": _maximum_fn,
    "clamp": _clamp_fn,
    "clamp_": _clamp_fn,
    "clip": _clamp_fn,
    "clip_": _clamp_fn,
    "clamp_min": _clamp_fn,
    "clamp_min_": _clamp_fn,
    "contiguous": _identity_fn,
    "clone": _identity_fn,
    "detach": _identity_fn,
}
