"""Arithmetic between activations and constants: what of ``+ - * /`` is affine, as rules use it.

Two activation tensors may be added or subtracted (``x + alpha * y``: the union of their terms); an
activation and a constant scalar or per-channel vector may be combined by any of the four (a channel
affine map ``x * k`` or ``x + k``, folded into the preceding conv or linear). Anything else is refused.
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor, fx

from converter.conversion.trace.builder import Affine, Builder, Const, PendingMax, Pop, Value
from converter.snn.ops import ChannelAffine, UpsampleNearest


def channel_const(b: Builder, node: fx.Node, c: Const, ref: fx.Node) -> Tensor:
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


def broadcast(b: Builder, node: fx.Node, arg: fx.Node, v: Value) -> Affine:
    """``v`` (the value of ``arg``) repeated over height and width to the shape of ``node``'s result.

    A pooled or global-context branch of shape (C, 1, 1) added to a (C, H, W) map reaches every one of the
    H * W positions: a synapse each, so its terms get a nearest upsampling that makes them whole.
    """
    out, shape = b.shape(node), b.shape(arg)
    if shape == out:
        return b.affine(node, v)
    if (
        len(shape) != len(out)
        or len(out) != 3
        or shape[0] != out[0]
        or any(s not in (1, o) for s, o in zip(shape[1:], out[1:], strict=True))
    ):
        raise b.fail(node, f"adding a {shape} map to a {out} one: only height and width may broadcast")
    return b.apply(node, v, UpsampleNearest([o // s for s, o in zip(shape[1:], out[1:], strict=True)]))


SIZE_OPERATORS = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
    "floordiv": operator.floordiv,
}


def sizes(b: Builder, node: fx.Node, kind: str) -> Value:
    """Arithmetic on sizes (``c // 2``): computed now; anything involving the batch size stays unknown."""
    x, y = b.arg(node, 0, "input"), b.arg(node, 1, "other")
    if not all(v is None or isinstance(v, int) for v in (x, y)):
        raise b.fail(node, f"{kind} of {type(x).__name__} and {type(y).__name__} is not size arithmetic")
    return None if x is None or y is None else SIZE_OPERATORS[kind](x, y)


def binary(b: Builder, node: fx.Node, kind: str) -> Value:
    """``+ - * /`` of activations and constants as affine maps; of two sizes, computed (``sizes``)."""
    operands = (b.arg(node, 0, "input"), b.arg(node, 1, "other"))
    if all(v is None or isinstance(v, int) for v in operands):
        return sizes(b, node, kind)
    x, y = (v if isinstance(v, (Pop, Affine, PendingMax, Const)) else Const(v) for v in operands)
    alpha = b.arg(node, 2, "alpha", 1)
    tensors = [v for v in (x, y) if isinstance(v, (Pop, Affine, PendingMax))]
    if len(tensors) == 2:
        if kind not in ("add", "sub"):
            raise b.fail(node, f"{kind} of two activation tensors is not linear")
        sign = -1.0 if kind == "sub" else 1.0
        args = (b.raw_arg(node, 0, "input"), b.raw_arg(node, 1, "other"))
        xb, yb = (broadcast(b, node, arg, v) for arg, v in zip(args, (x, y), strict=True))
        if sign * alpha != 1:
            yb = b.channel_affine(node, yb, ChannelAffine(scale=torch.tensor(sign * float(alpha))))
        return Affine(xb.terms + yb.terms)
    if len(tensors) != 1 or not isinstance(x if tensors[0] is y else y, Const):
        raise b.fail(node, f"{kind} with unsupported operands")
    v, c = (x, y) if tensors[0] is x else (y, x)
    ref = node.args[0] if v is x else node.args[1]
    k = channel_const(b, node, c, ref)
    if kind in ("add", "sub"):  # alpha scales the second operand: x +- alpha * y
        signed = (-1.0 if kind == "sub" else 1.0) * float(alpha)
        if v is y:  # k +- alpha * v
            return b.channel_affine(node, v, ChannelAffine(scale=torch.tensor(signed), bias=k))
        return b.channel_affine(node, v, ChannelAffine(scale=torch.tensor(1.0), bias=k * signed))
    if kind == "mul":
        return b.channel_affine(node, v, ChannelAffine(scale=k))
    if v is y:
        raise b.fail(node, "dividing by an activation tensor is not linear")
    return b.channel_affine(node, v, ChannelAffine(scale=1.0 / k))
