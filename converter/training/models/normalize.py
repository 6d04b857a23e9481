"""Per-channel input normalisation as the first layer of a model, so models take pixels in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with mean and std kept as [1, C, 1, 1] buffers."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"need one positive std per mean, got mean={mean}, std={std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a batch [N, C, H, W] of pixels in [0, 1]."""
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        """Show the statistics when the model is printed."""
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
