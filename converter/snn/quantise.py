"""TSC's clip-and-quantise map, the one place it is written (spec sections 2, 3 and 9).

A neuron with threshold ``lam`` and window ``T`` turns a drive ``z`` into a duration, and the duration
stands for a value:

    d = clip(floor(T * z / lam + s + eps), 0, T)    (durations; s is the shift, 0.5 by default)
    q = lam * d / T                                  (dequantised)

``eps`` (``LEVEL_EPS``, 1e-9 of a level) is part of the model's definition, the same in every precision
(docs/tsc-spec.md, section 2): a value lying exactly on a level reaches it whatever order the arithmetic
ran in. In float32 it is below the rounding of values near a level, so float32 arithmetic can land on the
other side of a boundary than float64; float64 computes the definition. Pixels are coded the same way
with ``lam = 1``. ``ClipFloor`` and ``InputQuant`` are the ANN modules
that compute ``q`` during training (clip-floor training, spec section 9); the converter reads their
``lam``, ``T`` and ``s`` so the spiking network computes exactly what the trained network computes.
They decide levels in float32 even under autocast, as the float32 engines decide them: in bf16 (8-bit
mantissa) ``T * z / lam`` would round across level boundaries. The next layer may still receive ``q``
rounded to bf16 by autocast; that touches the training arithmetic only, never which level is chosen.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

LEVEL_EPS = 1e-9  # of one level: a value this close below a level boundary reaches it (spec section 2)


def lam_view(lam: Tensor, ndim: int) -> Tensor:
    """Broadcast a scalar or per-channel threshold over a batch of ``ndim`` dimensions."""
    return lam if lam.dim() == 0 else lam.view(1, -1, *([1] * (ndim - 2)))


def level_floor(v: Tensor) -> Tensor:
    """``floor(v)`` with exact level boundaries decided upwards, whatever order the arithmetic ran in.

    A value that equals an integer in exact arithmetic can land a few ulps below it after folding or
    summing in another order; every engine and the clip-floor ANN floor through here so they agree.
    """
    return torch.floor(v + LEVEL_EPS)


def levels(z: Tensor, gain: Tensor | float, T: int, shift: float) -> Tensor:
    """``clip(floor(gain * z + shift), 0, T)`` with ``gain = T / lam`` already broadcast by the caller."""
    return torch.clamp(level_floor(z * gain + shift), 0, T)


def durations(z: Tensor, lam: Tensor, T: int, shift: float) -> Tensor:
    """TSC durations ``clip(floor(T * z / lam + shift), 0, T)`` of a batch ``z`` (channel dim 1)."""
    return levels(z, T / lam_view(lam, z.dim()), T, shift)


def dequantised(z: Tensor, lam: Tensor, T: int, shift: float) -> Tensor:
    """The value a TSC code stands for, ``lam * d / T``: the clip-and-quantise map."""
    return durations(z, lam, T, shift) * (lam_view(lam, z.dim()) / T)


def full_precision(x: Tensor) -> Tensor:
    """``x`` as float32 when it is a half-precision tensor (autocast output); float32/64 unchanged."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class ClipFloor(nn.Module):
    """ReLU replaced by TSC's clip-and-quantise map, with a trainable clipping level ``lam``.

    ``forward`` is ``q = lam * clip(floor(T * x / lam + s), 0, T) / T`` with the gradient of ``floor``
    passed straight through (and ``x / lam`` clipped to [0, 1] in the backward pass too).
    """

    def __init__(self, T: int, lam: float | Tensor = 1.0, shift: float = 0.5) -> None:
        super().__init__()
        self.T, self.shift = T, shift
        self.lam = nn.Parameter(torch.as_tensor(lam, dtype=torch.float32).detach().clone())

    def threshold(self) -> Tensor:
        """The clipping level as the converter reads it: ``|lam|``, kept away from zero."""
        return self.lam.abs().clamp_min(1e-6)

    def forward(self, x: Tensor) -> Tensor:
        """Quantised activation in float32, even under autocast; straight-through gradient of ``floor``."""
        with torch.autocast(x.device.type, enabled=False):
            x = full_precision(x)
            lam = lam_view(self.threshold(), x.dim())
            y = torch.clamp(x / lam, 0, 1)
            q = levels(y, self.T, self.T, self.shift) / self.T
            return (y + (q - y).detach()) * lam

    def extra_repr(self) -> str:
        """``T`` and the shift, for ``print(model)``."""
        return f"T={self.T}, shift={self.shift}"


class InputQuant(nn.Module):
    """Pixels quantised as the TSC input layer codes them: ``clip(floor(T * x + s), 0, T) / T``."""

    def __init__(self, T: int, shift: float = 0.5) -> None:
        super().__init__()
        self.T, self.shift = T, shift

    def forward(self, x: Tensor) -> Tensor:
        """Quantised pixels in float32, even under autocast (no gradient is needed through the input)."""
        with torch.autocast(x.device.type, enabled=False):
            return levels(full_precision(x), self.T, self.T, self.shift) / self.T
