"""Pieces every engine shares: TSC quantisation, threshold broadcasting, switch pooling."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def lam_view(lam: Tensor, ndim: int) -> Tensor:
    """Broadcast a scalar or per-channel threshold over a batch of ``ndim`` dimensions."""
    return lam if lam.dim() == 0 else lam.view(1, -1, *([1] * (ndim - 2)))


def level_tolerance(dtype: torch.dtype) -> float:
    """How far below a level boundary a value may fall from rounding alone and still reach it."""
    return 1e-9 if dtype == torch.float64 else 1e-4


def level_floor(v: Tensor) -> Tensor:
    """``floor(v)`` with exact level boundaries decided upwards, whatever order the arithmetic ran in.

    A value that equals an integer in exact arithmetic can land a few ulps below it after folding or
    summing in another order; every engine and the clip-floor ANN floor through here so they agree.
    """
    return torch.floor(v + level_tolerance(v.dtype))


def durations(z: Tensor, lam: Tensor, T: int, shift: float) -> Tensor:
    """TSC durations ``clip(floor(T * z / lam + shift), 0, T)`` (spec section 2)."""
    return torch.clamp(level_floor(z * (T / lam_view(lam, z.dim())) + shift), 0, T)


def dequantised(z: Tensor, lam: Tensor, T: int, shift: float) -> Tensor:
    """The value a TSC code stands for, ``lam * d / T``: the clip-and-quantise map of spec section 3."""
    return durations(z, lam, T, shift) * (lam_view(lam, z.dim()) / T)


def switch_pool(x: Tensor, pool: dict[str, Any]) -> Tensor:
    """Max pooling with a switch's parameters."""
    return F.max_pool2d(
        x, pool["kernel_size"], pool["stride"], pool["padding"], pool["dilation"], pool["ceil_mode"]
    )
