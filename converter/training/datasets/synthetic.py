"""Small learnable images made in code: a class colour and texture, shifted a little, plus noise."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from converter.training.datasets.base import DatasetError, ImageDataset

_SPLIT_OFFSETS = {"train": 1, "test": 2}


def synthetic_dataset(
    n: int,
    num_classes: int,
    size: tuple[int, int, int] = (3, 32, 32),
    seed: int = 0,
    split: str = "train",
) -> ImageDataset:
    """``n`` images of ``num_classes`` classes; one ``seed`` gives the same class patterns in every split."""
    if n < 1 or num_classes < 1:
        raise DatasetError(f"synthetic data needs n >= 1 and classes >= 1, got n={n}, classes={num_classes}")
    if split not in _SPLIT_OFFSETS:
        raise DatasetError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_OFFSETS)}")
    c, h, w = size
    patterns = _class_patterns(num_classes, c, h, w, seed)
    gen = torch.Generator().manual_seed(seed * 7919 + _SPLIT_OFFSETS[split])
    labels = torch.randperm(n, generator=gen) % num_classes
    shift = torch.randint(-2, 3, (n, 2), generator=gen)
    noise = torch.randn(n, c, h, w, generator=gen) * 0.08
    images = torch.stack(
        [patterns[k].roll((int(dy), int(dx)), dims=(1, 2)) for k, (dy, dx) in zip(labels, shift, strict=True)]
    )
    pixels = ((images + noise).clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageDataset(pixels, labels.to(torch.int64), [f"class{k}" for k in range(num_classes)])


def _class_patterns(num_classes: int, c: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Per class a random colour plus a smooth random texture, in [0.1, 0.9], [K, C, H, W]."""
    gen = torch.Generator().manual_seed(seed * 7919)
    colour = torch.rand(num_classes, c, 1, 1, generator=gen)
    coarse = torch.rand(num_classes, c, 4, 4, generator=gen)
    texture = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return 0.1 + 0.5 * colour + 0.3 * texture
