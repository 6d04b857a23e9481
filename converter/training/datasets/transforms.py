"""Batched image transforms that run on whichever device the tensor lives on."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels [N, C, H, W] to float32 in [0, 1]."""
    return images.float().div_(255.0)


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Crop each image at a random offset from its zero-padded copy, keeping the size [N, C, H, W]."""
    if padding == 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=images.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=images.device, generator=generator)
    rows = dy + torch.arange(h, device=images.device)
    cols = dx + torch.arange(w, device=images.device)
    batch = torch.arange(n, device=images.device)[:, None, None]
    crops = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return crops.permute(0, 3, 1, 2).contiguous()


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability one half."""
    flip = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` square of each image."""
    h, w = images.shape[-2:]
    if size > h or size > w:
        raise ValueError(f"cannot crop {size}x{size} out of {h}x{w} images")
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]


def resize_shorter(images: torch.Tensor, size: int) -> torch.Tensor:
    """Scale images (antialiased bilinear) so their shorter side is ``size``; uint8 in, uint8 out."""
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    target = (max(size, round(h * scale)), max(size, round(w * scale)))
    out = F.interpolate(images.float(), size=target, mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(images.dtype) if images.dtype == torch.uint8 else out
