"""The in-memory image dataset every loader returns, and the error they raise."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class DatasetError(ValueError):
    """A dataset could not be found, read or understood."""


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images as a uint8 tensor [N, C, H, W], labels as int64 [N] and the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DatasetError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {self.shape}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise DatasetError(f"labels must be int64 [{self.images.shape[0]}], got {self.labels.dtype}")

    @property
    def shape(self) -> tuple[int, ...]:
        """The images' shape [N, C, H, W]."""
        return tuple(self.images.shape)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def subset(self, n: int, seed: int = 0) -> ImageDataset:
        """A random subset of at most ``n`` images (all classes mixed), reproducible by ``seed``."""
        if n >= len(self):
            return self
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        order = order.sort().values.to(self.images.device)
        return ImageDataset(self.images[order], self.labels[order], self.classes)

    def disjoint_subsets(self, sizes: list[int], seed: int = 0) -> list[ImageDataset]:
        """Random subsets of ``sizes`` images sharing none; the first is ``subset(sizes[0], seed)``."""
        if sum(sizes) > len(self):
            raise ValueError(f"{sum(sizes)} images asked for, the dataset has {len(self)}")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        out, start = [], 0
        for n in sizes:
            pick = order[start : start + n].sort().values.to(self.images.device)
            out.append(ImageDataset(self.images[pick], self.labels[pick], self.classes))
            start += n
        return out

    def to(self, device: torch.device | str) -> ImageDataset:
        """The same dataset with its tensors on ``device``."""
        return ImageDataset(self.images.to(device), self.labels.to(device), self.classes)
