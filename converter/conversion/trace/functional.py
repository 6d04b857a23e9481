"""Conversion rules of layers written as calls on weight tensors, and of the ATen operators of exported
programs.

``F.conv2d``, ``F.linear`` and ``F.batch_norm`` convert when their weights and statistics are constants
of the model (parameters, buffers). A ``torch.export`` program (and a TorchScript model converted to one)
is a graph of ATen operators (``torch.ops.aten.conv2d.default``, ...): each operator that a torch function
with a rule also spells is filed under that function's rule, so both convert alike; ``FUNCTIONS`` lists
them for the registry (``trace.rules``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx

from converter.conversion.trace.builder import Builder, Const, Value
from converter.conversion.trace.layers import Rule, conv
from converter.snn.fold import normalisation_affine
from converter.snn.ops import Linear

aten = torch.ops.aten


def _weight(b: Builder, node: fx.Node, i: int, name: str) -> Tensor | None:
    """Argument ``i``/``name``: a constant tensor of the model, or None; an activation is refused."""
    v = b.arg(node, i, name)
    if v is None or (isinstance(v, Const) and isinstance(v.value, Tensor)):
        return None if v is None else v.value
    raise b.fail(node, f"its {name} must be a parameter or buffer of the model, not a computed tensor")


def _conv(groups_at: int) -> Rule:
    """The rule of ``F.conv2d(x, weight, bias, stride, padding, dilation, groups)`` (``groups_at`` 6) or
    ``aten.convolution(..., dilation, transposed, output_padding, groups)`` (``groups_at`` 8)."""

    def rule(b: Builder, node: fx.Node, _: Any) -> Value:
        if groups_at == 8 and b.arg(node, 6, "transposed"):
            raise b.fail(node, "a transposed convolution has no TSC equivalent (spec section 4)")
        weight = _weight(b, node, 1, "weight")
        if weight is None or weight.dim() != 4:
            raise b.fail(node, "only 2-d convolutions with a weight tensor convert")
        stride, padding, dilation = (b.arg(node, 3 + i, k, d) for i, (k, d) in enumerate(_CONV_DEFAULTS))
        groups = b.arg(node, groups_at, "groups", 1)
        return conv(b, node, weight, _weight(b, node, 2, "bias"), stride, padding, dilation, groups)

    return rule


_CONV_DEFAULTS = (("stride", 1), ("padding", 0), ("dilation", 1))


def _linear_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    """``F.linear(x, weight, bias)`` (and ``aten.linear``)."""
    weight = _weight(b, node, 1, "weight")
    if weight is None or weight.dim() != 2:
        raise b.fail(node, "a linear layer needs a 2-d weight tensor")
    bias = _weight(b, node, 2, "bias")
    op = Linear(weight=weight.detach(), bias=None if bias is None else bias.detach(), origin=node.name)
    return b.apply(node, b.tensor(node), op)


def _batch_norm(b: Builder, node: fx.Node, positions: dict[str, int]) -> Value:
    """A BatchNorm call at inference (``training=False``) with its arguments at ``positions``."""
    if b.arg(node, positions["training"], "training", False):
        raise b.fail(node, "a BatchNorm in training mode normalises by the batch's statistics; use eval()")
    tensors = {k: _weight(b, node, i, k) for k, i in positions.items() if k not in ("training", "eps")}
    try:
        affine = normalisation_affine(
            tensors["running_mean"],
            tensors["running_var"],
            float(b.arg(node, positions["eps"], "eps", 1e-5)),
            tensors["weight"],
            tensors["bias"],
        )
    except ValueError as e:
        raise b.fail(node, str(e)) from None
    return b.channel_affine(node, b.tensor(node), affine)


_F_BATCH_NORM = {"running_mean": 1, "running_var": 2, "weight": 3, "bias": 4, "training": 5, "eps": 7}
_ATEN_BATCH_NORM = {"weight": 1, "bias": 2, "running_mean": 3, "running_var": 4, "training": 5, "eps": 7}
_ATEN_NO_TRAINING = {"weight": 1, "bias": 2, "running_mean": 3, "running_var": 4, "training": 99, "eps": 6}


def _no_training_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    """``aten._native_batch_norm_legit_no_training``: the normalised tensor, then mean and invstd unused."""
    return _batch_norm(b, node, _ATEN_NO_TRAINING), None, None


FUNCTIONS: dict[Any, Rule] = {
    F.conv2d: _conv(6),
    F.linear: _linear_fn,
    F.batch_norm: lambda b, node, _: _batch_norm(b, node, _F_BATCH_NORM),
    aten.conv2d.default: _conv(6),
    aten.conv2d.padding: _conv(6),
    aten.convolution.default: _conv(8),
    aten.linear.default: _linear_fn,
    aten.batch_norm.default: lambda b, node, _: _batch_norm(b, node, _ATEN_BATCH_NORM),
    aten._native_batch_norm_legit_no_training.default: _no_training_fn,
}

# ATen operators taking the arguments of a torch function (or tensor method, by name) that has a rule, in
# the same order: they share its rule (``trace.rules``)
SAME_AS: dict[Any, Callable | str] = {
    aten.relu.default: F.relu,
    aten.relu_.default: F.relu,
    aten.relu6.default: F.relu6,
    aten.hardtanh.default: F.hardtanh,
    aten.hardtanh_.default: F.hardtanh,
    aten.clamp.default: torch.clamp,
    aten.clamp_.default: torch.clamp,
    aten.clamp_min.default: torch.clamp_min,
    aten.clamp_min_.default: torch.clamp_min,
    aten.threshold.default: F.threshold,
    aten.maximum.default: torch.maximum,
    aten.dropout.default: F.dropout,
    aten.clone.default: "clone",
    aten.contiguous.default: "contiguous",
    aten.detach.default: "detach",
    aten.max_pool2d.default: F.max_pool2d,
    aten.avg_pool2d.default: F.avg_pool2d,
    aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d,
    aten.upsample_nearest2d.vec: F.interpolate,
    aten.flatten.using_ints: torch.flatten,
    aten.view.default: "view",
    aten.reshape.default: "reshape",
    aten._unsafe_view.default: "view",
    aten.squeeze.dim: torch.squeeze,
    aten.squeeze.dims: torch.squeeze,
    aten.unsqueeze.default: torch.unsqueeze,
    aten.permute.default: torch.permute,
    aten.mean.dim: torch.mean,
    aten.sum.dim_IntList: torch.sum,
    aten.cat.default: torch.cat,
    aten.pad.default: F.pad,
    aten.channel_shuffle.default: torch.channel_shuffle,
    aten.pixel_shuffle.default: F.pixel_shuffle,
    aten.pixel_unshuffle.default: F.pixel_unshuffle,
    aten.chunk.default: torch.chunk,
    aten.split.Tensor: torch.split,
    aten.split_with_sizes.default: torch.split,
    aten.neg.default: torch.neg,
    aten.sym_size.int: "size",
    **{
        getattr(aten, op).Tensor: getattr(torch, op.rstrip("_"))
        for op in ("add", "add_", "sub", "sub_", "mul", "mul_", "div")
    },
    **{getattr(aten, op).Scalar: getattr(torch, op) for op in ("add", "sub", "mul", "div")},
}
