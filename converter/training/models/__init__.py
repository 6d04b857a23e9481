"""The model zoo: CIFAR and ImageNet CNNs that take RGB pixels in [0, 1], selectable by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from converter.training.models.normalize import Normalize
from converter.training.models.resnet import resnet20, resnet34
from converter.training.models.vgg import vgg16, vgg16_imagenet

_ZOO: dict[str, tuple[Callable[[int], nn.Module], tuple[int, int, int]]] = {
    "resnet20": (resnet20, (3, 32, 32)),
    "vgg16": (vgg16, (3, 32, 32)),
    "vgg16-imagenet": (vgg16_imagenet, (3, 224, 224)),
    "resnet34": (resnet34, (3, 224, 224)),
}
MODEL_NAMES: tuple[str, ...] = tuple(_ZOO)


def _entry(name: str) -> tuple[Callable[[int], nn.Module], tuple[int, int, int]]:
    """The builder and input size registered under ``name``."""
    if name not in _ZOO:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return _ZOO[name]


def build_model(name: str, num_classes: int = 10) -> nn.Module:
    """A freshly initialised zoo model with ``num_classes`` outputs."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    return _entry(name)[0](num_classes)


def input_size(name: str) -> tuple[int, int, int]:
    """The (C, H, W) input a zoo model expects."""
    return _entry(name)[1]


__all__ = ["MODEL_NAMES", "Normalize", "build_model", "input_size"]
