"""Folding per-channel affine maps (BatchNorm, constant scaling, normalisation) into neighbouring ops."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from converter.snn.ops import AdaptiveAvgPool2d, AvgPool2d, ChannelAffine, Conv2d, Linear, Op


def batchnorm_affine(bn: nn.modules.batchnorm._BatchNorm) -> ChannelAffine:
    """The inference-time map of a BatchNorm layer as ``x * scale + shift`` per channel."""
    weight, bias = (bn.weight, bn.bias) if bn.affine else (None, None)
    return normalisation_affine(bn.running_mean, bn.running_var, bn.eps, weight, bias)


def normalisation_affine(
    mean: Tensor | None, var: Tensor | None, eps: float, weight: Tensor | None, bias: Tensor | None
) -> ChannelAffine:
    """``(x - mean) / sqrt(var + eps) * weight + bias`` (BatchNorm at inference) as a channel affine map."""
    if mean is None or var is None:
        raise ValueError("BatchNorm without running statistics (track_running_stats=False) cannot be folded")
    scale = 1.0 / torch.sqrt(var.detach() + eps)
    shift = -mean.detach() * scale
    if weight is not None:
        scale, shift = scale * weight.detach(), shift * weight.detach()
    if bias is not None:
        shift = shift + bias.detach()
    return ChannelAffine(scale=scale, bias=shift)


def _scale_out(weight: Tensor, scale: Tensor) -> Tensor:
    return weight * (scale.view(-1, *([1] * (weight.dim() - 1))) if scale.dim() else scale)


def append_affine(ops: list[Op], affine: ChannelAffine, features: bool = True) -> list[Op]:
    """``ops`` followed by ``affine``, folded into the last op when that is a conv, linear or affine map.

    ``features=False`` says the activation has dimensions after the channel one (``(C, L)``): a linear op
    then maps the last dimension, not the channels ``affine`` scales, and is not folded into.
    """
    if not ops:
        return [affine]
    last = ops[-1]
    scale, shift = affine.scale, affine.bias
    if isinstance(last, Linear) and not features and any(t is not None and t.dim() for t in (scale, shift)):
        return [*ops, affine]
    if isinstance(last, (Conv2d, Linear, ChannelAffine)):
        old_bias = last.bias
        new_bias = old_bias * scale if old_bias is not None else None
        if shift is not None:
            new_bias = shift if new_bias is None else new_bias + shift
        if isinstance(last, ChannelAffine):
            return [*ops[:-1], replace(last, scale=last.scale * scale, bias=new_bias)]
        out = last.weight.shape[0]
        if scale.dim() == 0 or scale.numel() == out:
            if new_bias is not None and new_bias.dim() == 0:
                new_bias = new_bias.expand(out).clone()
            return [*ops[:-1], replace(last, weight=_scale_out(last.weight, scale), bias=new_bias)]
    return [*ops, affine]


def prepend_scale(ops: list[Op], scale: Tensor) -> list[Op]:
    """``ops`` reading ``scale * x``: folded into the first weight op when the ops before it allow."""
    for i, op in enumerate(ops):
        if isinstance(op, ChannelAffine):
            return [*ops[:i], replace(op, scale=op.scale * scale), *ops[i + 1 :]]
        if isinstance(op, (Conv2d, Linear)):
            if scale.dim() == 0:
                return [*ops[:i], replace(op, weight=op.weight * scale), *ops[i + 1 :]]
            if isinstance(op, Conv2d) and op.groups == 1 and op.weight.shape[1] == scale.numel():
                return [*ops[:i], replace(op, weight=op.weight * scale.view(1, -1, 1, 1)), *ops[i + 1 :]]
            break
        if scale.dim() and not isinstance(op, (AvgPool2d, AdaptiveAvgPool2d)):
            break  # the op may move channels: keep the per-channel scale explicit
    return [ChannelAffine(scale=scale), *ops]
