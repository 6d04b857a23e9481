"""Affine operations on the synapse path between two populations, and their structural (0/1) twins.

Every op is linear plus an optional constant offset ("bias"). Engines run an op with or without its
offset; fan-out counting runs its *structure*: the same linear map with every nonzero coefficient
replaced by 1, so that the transpose of a chain applied to ones counts synapses per source neuron.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


def _channel_view(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-channel vector (or scalar) to broadcast over dim 1 of ``x``."""
    if v.dim() == 0:
        return v
    return v.view(1, -1, *([1] * (x.dim() - 2)))


@dataclass
class Op:
    """Base class: subclasses list their tensors in ``TENSORS`` and their JSON parameters as fields."""

    kind: ClassVar[str] = ""
    TENSORS: ClassVar[tuple[str, ...]] = ()

    def forward(self, x: Tensor, bias: bool = True) -> Tensor:
        """Apply the op; ``bias=False`` drops the constant offset (pure linear part)."""
        raise NotImplementedError

    def structure(self, x: Tensor) -> Tensor:
        """Apply the 0/1 connectivity of the op (no offset)."""
        raise NotImplementedError

    def macs(self, in_shape: tuple[int, ...]) -> int:
        """Dense multiply-accumulates of this op for one image of shape ``in_shape``."""
        return 0

    def without_bias(self) -> Op:
        """Copy of the op with its offset removed."""
        return replace(self, bias=None) if "bias" in self.TENSORS else self

    def params(self) -> dict[str, Any]:
        """JSON-serialisable hyper-parameters."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.TENSORS}

    def tensors(self) -> dict[str, Tensor]:
        """The op's tensors, by role."""
        return {n: getattr(self, n) for n in self.TENSORS if getattr(self, n) is not None}

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Op:
        """Copy with every tensor cast to ``dtype`` and/or moved to ``device``."""
        return replace(self, **{n: t.to(device=device, dtype=dtype) for n, t in self.tensors().items()})


@dataclass
class Conv2d(Op):
    kind: ClassVar[str] = "conv2d"
    TENSORS: ClassVar[tuple[str, ...]] = ("weight", "bias")
    weight: Tensor = field(repr=False, default=None)
    bias: Tensor | None = field(repr=False, default=None)
    stride: list[int] = field(default_factory=lambda: [1, 1])
    padding: list[int] = field(default_factory=lambda: [0, 0])
    dilation: list[int] = field(default_factory=lambda: [1, 1])
    groups: int = 1
    origin: str = ""  # the traced call it came from: the ANN computes it once, whatever consumes it

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: Tensor, bias: bool = True) -> Tensor:
        return self._conv(x, self.weight, self.bias if bias else None)

    def structure(self, x: Tensor) -> Tensor:
        return self._conv(x, (self.weight != 0).to(x.dtype), None)

    def macs(self, in_shape: tuple[int, ...]) -> int:
        out = self.forward(torch.zeros(1, *in_shape, dtype=self.weight.dtype), bias=False)
        return out.numel() * self.weight[0].numel()


@dataclass
class Linear(Op):
    kind: ClassVar[str] = "linear"
    TENSORS: ClassVar[tuple[str, ...]] = ("weight", "bias")
    weight: Tensor = field(repr=False, default=None)
    bias: Tensor | None = field(repr=False, default=None)
    origin: str = ""  # the traced call it came from: the ANN computes it once, whatever consumes it

    def forward(self, x: Tensor, bias: bool = True) -> Tensor:
        return F.linear(x, self.weight, self.bias if bias else None)

    def structure(self, x: Tensor) -> Tensor:
        return F.linear(x, (self.weight != 0).to(x.dtype))

    def macs(self, in_shape: tuple[int, ...]) -> int:
        return self.weight.numel() * math.prod(in_shape[:-1])


@dataclass
class ChannelAffine(Op):
    """``x * scale + bias``, per channel (dim 1) or scalar: unfoldable BN, input normalisation."""

    kind: ClassVar[str] = "channel_affine"
    TENSORS: ClassVar[tuple[str, ...]] = ("scale", "bias")
    scale: Tensor = field(repr=False, default=None)
    bias: Tensor | None = field(repr=False, default=None)

    def forward(self, x: Tensor, bias: bool = True) -> Tensor:
        y = x * _channel_view(self.scale, x)
        return y + _channel_view(self.bias, x) if bias and self.bias is not None else y

    def structure(self, x: Tensor) -> Tensor:
        return x * _channel_view((self.scale != 0).to(x.dtype), x)


@dataclass
class AvgPool2d(Op):
    kind: ClassVar[str] = "avg_pool2d"
    kernel_size: list[int] = field(default_factory=lambda: [2, 2])
    stride: list[int] = field(default_factory=lambda: [2, 2])
    padding: list[int] = field(default_factory=lambda: [0, 0])
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None

    def forward(self, x: Tensor, bias: bool = True) -> Tensor:
        return F.avg_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def structure(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, True, 1)


def _adaptive_bins(size: int, out: int, dtype: torch.dtype) -> Tensor:
    """0/1 matrix [out, size]: which inputs fall in each adaptive-pooling bin (PyTorch's bin rule)."""
    m = torch.zeros(out, size, dtype=dtype)
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, start:end] = 1
    return m


@dataclass
class AdaptiveAvgPool2d(Op):
    kind: ClassVar[str] = "adaptive_avg_pool2d"
    output_size: list[int] = field(default_factory=lambda: [1, 1])

    def forward(self, x: Tensor, bias: bool = True) -> Tensor:
        return F.adaptive_avg_pool2d(x, self.output_size)

    def structure(self, x: Tensor) -> Tensor:
        rows = _adaptive_bins(x.shape[-2], self.output_size[0], x.dtype)
        cols = _adaptive_bins(x.shape[-1], self.output_size[1], x.dtype)
        return torch.einsum("ih,nchw,jw->ncij", rows, x, cols)


@dataclass
class Flatten(Op):
    """Flatten every dimension after the batch dimension."""

    kind: ClassVar[str] = "flatten"

    def forward(self, x: Tensor, bias: bool = True) -> Tensor:
        return x.flatten(1)

    def structure(self, x: Tensor) -> Tensor:
        return x.flatten(1)


@dataclass
class Slice(Op):
    """Basic slicing of the non-batch dimensions, one ``[start, stop, step]`` per dimension."""

    kind: ClassVar[str] = "slice"
    slices: list[list[int | None]] = field(default_factory=list)

    def forward(self, x: Tensor, bias: bool = True) -> Tensor:
        return x[(slice(None), *(slice(*s) for s in self.slices))]

    def structure(self, x: Tensor) -> Tensor:
        return self.forward(x)


@dataclass
class Pad(Op):
    """Zero padding, in ``F.pad`` order (last dimension first)."""

    kind: ClassVar[str] = "pad"
    pad: list[int] = field(default_factory=list)

    def forward(self, x: Tensor, bias: bool = True) -> Tensor:
        return F.pad(x, self.pad)

    def structure(self, x: Tensor) -> Tensor:
        return F.pad(x, self.pad)


@dataclass
class Reshape(Op):
    """A view of each image's values in another shape (``squeeze``, ``unsqueeze``, ``view``)."""

    kind: ClassVar[str] = "reshape"
    shape: list[int] = field(default_factory=list)

    def forward(self, x: Tensor, bias: bool = True) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def structure(self, x: Tensor) -> Tensor:
        return self.forward(x)


@dataclass
class Permute(Op):
    """The image's dimensions reordered (``transpose``, ``permute``); ``dims`` index them from 0."""

    kind: ClassVar[str] = "permute"
    dims: list[int] = field(default_factory=list)

    def forward(self, x: Tensor, bias: bool = True) -> Tensor:
        return x.permute(0, *(d + 1 for d in self.dims))

    def structure(self, x: Tensor) -> Tensor:
        return self.forward(x)


@dataclass
class UpsampleNearest(Op):
    """Nearest-neighbour upsampling by integer factors: each pixel repeated ``scale`` times per axis."""

    kind: ClassVar[str] = "upsample_nearest"
    scale: list[int] = field(default_factory=lambda: [2, 2])

    def forward(self, x: Tensor, bias: bool = True) -> Tensor:
        return x.repeat_interleave(self.scale[0], dim=-2).repeat_interleave(self.scale[1], dim=-1)

    def structure(self, x: Tensor) -> Tensor:
        return self.forward(x)


@dataclass
class ChannelPermutation(Op):
    """Channel ``i`` of the output is channel ``order[i]`` of the input (channel shuffle)."""

    kind: ClassVar[str] = "channel_permutation"
    order: list[int] = field(default_factory=list)

    def forward(self, x: Tensor, bias: bool = True) -> Tensor:
        return x[:, self.order]

    def structure(self, x: Tensor) -> Tensor:
        return self.forward(x)


OP_TYPES: dict[str, type[Op]] = {
    cls.kind: cls
    for cls in (
        Conv2d,
        Linear,
        ChannelAffine,
        AvgPool2d,
        AdaptiveAvgPool2d,
        Flatten,
        Slice,
        Pad,
        ChannelPermutation,
        UpsampleNearest,
        Reshape,
        Permute,
    )
}


def op_from_spec(kind: str, params: dict[str, Any], tensors: dict[str, Tensor]) -> Op:
    """Rebuild an op from its kind, JSON parameters and tensors (the inverse of ``params``/``tensors``)."""
    if kind not in OP_TYPES:
        raise ValueError(f"unknown op kind {kind!r}")
    return OP_TYPES[kind](**params, **tensors)


def run_chain(ops: list[Op], x: Tensor, bias: bool = True) -> Tensor:
    """Apply a chain of ops in order."""
    for op in ops:
        x = op.forward(x, bias)
    return x


def run_structure(ops: list[Op], x: Tensor) -> Tensor:
    """Apply the 0/1 connectivity of a chain of ops in order."""
    for op in ops:
        x = op.structure(x)
    return x


class MaxPool(NamedTuple):
    """A switch's max pooling (spec section 5): the one operation that is not affine, so not an ``Op``."""

    kernel_size: list[int]
    stride: list[int]
    padding: list[int]
    dilation: list[int]
    ceil_mode: bool

    def __call__(self, x: Tensor) -> Tensor:
        """Max over each pooling window of ``x``."""
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def argmax(self, x: Tensor) -> Tensor:
        """Flat index, within each channel of ``x``, of every window's maximum."""
        return F.max_pool2d(
            x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, return_indices=True
        )[1]

    def params(self) -> dict[str, Any]:
        """JSON-serialisable parameters (``MaxPool(**params)`` rebuilds it)."""
        return self._asdict()
