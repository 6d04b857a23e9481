"""Conversion rules of tensor plumbing: flatten, reshape, sizes, global pooling spelt as reductions,
squeeze, concatenation, channel shuffle, padding, slicing and arithmetic (``trace.arithmetic``).

Each rule receives the ``Builder``, the fx node and (for modules) the module, and returns the node's
value; ``MODULES``, ``FUNCTIONS`` and ``METHODS`` list them for the registry (``trace.rules``).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from converter.conversion.trace.arithmetic import binary, sizes
from converter.conversion.trace.builder import Affine, Builder, PendingMax, Pop, Value
from converter.conversion.trace.layers import Rule, pair
from converter.snn.ops import (
    AdaptiveAvgPool2d,
    ChannelAffine,
    ChannelPermutation,
    Flatten,
    Pad,
    Permute,
    Reshape,
    Slice,
)


def _flatten_module(b: Builder, node: fx.Node, m: nn.Flatten) -> Value:
    return _flatten(b, node, m.start_dim, m.end_dim)


def _flatten(b: Builder, node: fx.Node, start: int, end: int) -> Value:
    """Flattening that keeps the batch: all of an image (``Flatten``) or some of its dimensions."""
    ndim = len(b.shape(node.args[0])) + 1
    if start % ndim == 0:
        raise b.fail(node, f"flatten({start}, {end}) mixes the batch into the image's dimensions")
    whole = start % ndim == 1 and end % ndim == ndim - 1
    return b.apply(node, b.tensor(node), Flatten() if whole else Reshape(list(b.shape(node))))


def _flatten_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return _flatten(b, node, b.arg(node, 1, "start_dim", 0), b.arg(node, 2, "end_dim", -1))


def _reshape_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    """``view``, ``reshape``, ``squeeze``, ``unsqueeze``: the same values in another per-image shape."""
    in_shape, out_shape = b.shape(node.args[0]), b.shape(node)
    if not b.keeps_batch(node):
        raise b.fail(node, f"reshape {in_shape} -> {out_shape} mixes the batch into the image's dimensions")
    if out_shape == in_shape:
        return b.tensor(node)
    op = Flatten() if len(out_shape) == 1 else Reshape(list(out_shape))
    return b.apply(node, b.tensor(node), op)


def _permute_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    """``transpose``, ``swapaxes`` and ``permute`` of the image's dimensions (the batch stays first)."""
    ndim = len(b.shape(node.args[0])) + 1
    if node.target in ("transpose", torch.transpose, "swapaxes", torch.swapaxes):
        first, second = (b.arg(node, 1, "dim0") % ndim, b.arg(node, 2, "dim1") % ndim)
        order = list(range(ndim))
        order[first], order[second] = order[second], order[first]
    else:
        dims = list(node.args[1:]) if len(node.args) > 2 else b.arg(node, 1, "dims")
        order = [d % ndim for d in b.resolve(dims)]
    if order[0] != 0:
        raise b.fail(node, f"permutation {order} moves the batch dimension")
    return b.apply(node, b.tensor(node), Permute([d - 1 for d in order[1:]]))


def _shape_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    """Sizes are static except the batch size, which is ``None`` so that only reshapes may use it."""
    shape = (None, *b.shape(node.args[0]))
    if node.target == "dim":
        return len(shape)
    if node.target is getattr:
        attribute = node.args[1]
        if attribute in ("device", "dtype"):  # what the converter traces on: constants made with them match
            return b.device if attribute == "device" else node.args[0].meta["tensor_meta"].dtype
        if attribute not in ("shape", "ndim"):
            raise b.fail(node, f"attribute {attribute!r} of an activation tensor is not supported")
        return shape if attribute == "shape" else len(shape)
    dim = b.arg(node, 1, "dim")
    return shape if dim is None else shape[dim]


def _spatial_reduce(b: Builder, node: fx.Node, what: str) -> Value:
    """Mean or sum over both spatial dimensions: global average pooling (times the area for a sum)."""
    dims = b.arg(node, 1, "dim")
    shape = b.shape(node.args[0])
    if len(shape) != 3 or dims is None or sorted(d % 4 for d in pair(dims)) != [2, 3]:
        raise b.fail(node, f"{what} is supported only over the two spatial dimensions (global pooling)")
    v = b.apply(node, b.tensor(node), AdaptiveAvgPool2d([1, 1]))
    if what == "sum":
        v = b.channel_affine(node, v, ChannelAffine(scale=torch.tensor(float(shape[1] * shape[2]))))
    return v if b.arg(node, 2, "keepdim", False) else b.apply(node, v, Flatten())


def _mean_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return _spatial_reduce(b, node, "mean")


def _sum_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return _spatial_reduce(b, node, "sum")


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


def _shuffle_module(b: Builder, node: fx.Node, m: nn.ChannelShuffle) -> Value:
    return _shuffle(b, node, m.groups)


def _shuffle_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return _shuffle(b, node, b.arg(node, 1, "groups"))


def _pad_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    mode, value = b.arg(node, 2, "mode", "constant"), b.arg(node, 3, "value", None)
    if mode != "constant" or value not in (None, 0, 0.0):
        raise b.fail(node, f"padding mode={mode!r} value={value!r}: only zero padding is linear")
    return b.apply(node, b.tensor(node), Pad(list(b.arg(node, 1, "pad"))))


def _pad_module(b: Builder, node: fx.Node, m: nn.ConstantPad2d | nn.ZeroPad2d) -> Value:
    if m.value != 0:
        raise b.fail(node, f"padding with value {m.value!r}: only zero padding is linear")
    return b.apply(node, b.tensor(node), Pad(list(m.padding)))


def _split(b: Builder, node: fx.Node, dim: Any, sizes: list[int]) -> tuple[Value, ...]:
    """``chunk`` / ``split`` along the channels: one channel slice per part."""
    ndim = len(b.shape(node.args[0])) + 1
    if not isinstance(dim, int) or dim % ndim != 1:
        raise b.fail(node, f"splitting along dim {dim}: only the channel dimension (1) is supported")
    v, parts, start = b.tensor(node), [], 0
    for size in sizes:
        parts.append(b.apply(node, v, Slice([[start, start + size, None]])))
        start += size
    return tuple(parts)


def _chunk_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    chunks, channels = b.arg(node, 1, "chunks"), b.shape(node.args[0])[0]
    step = -(-channels // chunks) if isinstance(chunks, int) and chunks > 0 else 0
    if not step:
        raise b.fail(node, f"chunk into {chunks!r} parts")
    sizes = [min(step, channels - s) for s in range(0, channels, step)]
    return _split(b, node, b.arg(node, 2, "dim", 0), sizes)


def _split_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    size = b.arg(node, 1, "split_size_or_sections", node.kwargs.get("split_size"))
    channels = b.shape(node.args[0])[0]
    if isinstance(size, int) and size > 0:
        sizes = [min(size, channels - s) for s in range(0, channels, size)]
    elif isinstance(size, (list, tuple)) and all(isinstance(s, int) for s in size) and sum(size) == channels:
        sizes = list(size)
    else:
        raise b.fail(node, f"split into {size!r} of {channels} channels")
    return _split(b, node, b.arg(node, 2, "dim", 0), sizes)


def _pixel_shuffle(b: Builder, node: fx.Node, r: Any, inverse: bool) -> Value:
    """``PixelShuffle(r)``: (C r^2, H, W) -> (C, H r, W r), a permutation of the values (and its inverse)."""
    (c, h, w), (oc, oh, ow) = b.shape(node.args[0]), b.shape(node)
    if not isinstance(r, int) or r < 1:
        raise b.fail(node, f"pixel shuffle by {r!r}")
    if inverse:  # (C, H r, W r) -> (C, r, r, H, W) by way of (C, H, r, W, r)
        ops = [Reshape([c, h // r, r, w // r, r]), Permute([0, 2, 4, 1, 3]), Reshape([oc, oh, ow])]
    else:  # (C r^2, H, W) = (C, r, r, H, W) -> (C, H, r, W, r)
        ops = [Reshape([oc, r, r, h, w]), Permute([0, 3, 1, 4, 2]), Reshape([oc, oh, ow])]
    v = b.tensor(node)
    for op in ops:
        v = b.apply(node, v, op)
    return v


def _neg_fn(b: Builder, node: fx.Node, _: Any) -> Value:
    return b.channel_affine(node, b.tensor(node), ChannelAffine(scale=torch.tensor(-1.0)))


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


def _arithmetic(kind: str) -> Rule:
    """The rule of one arithmetic operator: what of it is affine (``trace.arithmetic``)."""

    def rule(b: Builder, node: fx.Node, _: Any) -> Value:
        return binary(b, node, kind)

    return rule


ARITHMETIC = {
    "add": ((operator.add, operator.iadd, torch.add), ("add", "add_")),
    "sub": ((operator.sub, operator.isub, torch.sub), ("sub", "sub_")),
    "mul": ((operator.mul, operator.imul, torch.mul), ("mul", "mul_")),
    "div": ((operator.truediv, operator.itruediv, torch.div), ("div", "div_")),
}
_ARITHMETIC_RULES = {kind: _arithmetic(kind) for kind in ARITHMETIC}

MODULES: dict[type[nn.Module], Rule] = {
    nn.Flatten: _flatten_module,
    nn.Unflatten: _reshape_fn,
    nn.ChannelShuffle: _shuffle_module,
    nn.ZeroPad2d: _pad_module,
    nn.PixelShuffle: lambda b, node, m: _pixel_shuffle(b, node, m.upscale_factor, False),
    nn.PixelUnshuffle: lambda b, node, m: _pixel_shuffle(b, node, m.downscale_factor, True),
    nn.ConstantPad2d: _pad_module,
}
FUNCTIONS: dict[Any, Rule] = {
    torch.flatten: _flatten_fn,
    torch.reshape: _reshape_fn,
    getattr: _shape_fn,
    torch.mean: _mean_fn,
    torch.sum: _sum_fn,
    torch.squeeze: _reshape_fn,
    torch.unsqueeze: _reshape_fn,
    torch.transpose: _permute_fn,
    torch.swapaxes: _permute_fn,
    torch.permute: _permute_fn,
    torch.cat: _cat_fn,
    torch.concat: _cat_fn,
    torch.concatenate: _cat_fn,
    F.channel_shuffle: _shuffle_fn,
    torch.channel_shuffle: _shuffle_fn,
    F.pad: _pad_fn,
    torch.chunk: _chunk_fn,
    F.pixel_shuffle: lambda b, node, _: _pixel_shuffle(b, node, b.arg(node, 1, "upscale_factor"), False),
    F.pixel_unshuffle: lambda b, node, _: _pixel_shuffle(b, node, b.arg(node, 1, "downscale_factor"), True),
    torch.split: _split_fn,
    operator.neg: _neg_fn,
    torch.neg: _neg_fn,
    operator.getitem: _getitem_fn,
    operator.floordiv: lambda b, node, _: sizes(b, node, "floordiv"),
    **{f: _ARITHMETIC_RULES[kind] for kind, (functions, _) in ARITHMETIC.items() for f in functions},
}
METHODS: dict[str, Rule] = {
    "flatten": _flatten_fn,
    "view": _reshape_fn,
    "reshape": _reshape_fn,
    "size": _shape_fn,
    "dim": _shape_fn,
    "mean": _mean_fn,
    "sum": _sum_fn,
    "squeeze": _reshape_fn,
    "unsqueeze": _reshape_fn,
    "transpose": _permute_fn,
    "swapaxes": _permute_fn,
    "permute": _permute_fn,
    "chunk": _chunk_fn,
    "split": _split_fn,
    "neg": _neg_fn,
    **{m: _ARITHMETIC_RULES[kind] for kind, (_, methods) in ARITHMETIC.items() for m in methods},
}
