"""ResNets: CIFAR ResNet-20 (option-A shortcuts) and ImageNet ResNet-34, torchvision-style parameter names."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from converter.training.models.normalize import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, Normalize


class PadShortcut(nn.Module):
    """Option-A shortcut: take every second pixel and zero-pad the channels, ``planes // 4`` each side."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Halve the resolution and double the channels without parameters."""
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    """relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x)); identity shortcut if ``downsample`` is None."""

    def __init__(self, in_planes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block forward pass."""
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + shortcut)


Shortcut = Callable[[int, int, int], nn.Module]


def _pad_shortcut(in_planes: int, planes: int, stride: int) -> nn.Module:
    """CIFAR option A."""
    return PadShortcut(planes)


def _conv_shortcut(in_planes: int, planes: int, stride: int) -> nn.Module:
    """ImageNet option B: strided 1x1 convolution and batch norm."""
    return nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))


def _stage(in_planes: int, planes: int, blocks: int, stride: int, shortcut: Shortcut) -> nn.Sequential:
    """``blocks`` basic blocks, the first one changing stride and width."""
    first = shortcut(in_planes, planes, stride) if stride != 1 or in_planes != planes else None
    layers = [BasicBlock(in_planes, planes, stride, first)]
    layers += [BasicBlock(planes, planes, 1, None) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _kaiming_init(model: nn.Module) -> None:
    """He-normal convolutions (fan-out), unit batch-norm scales, zero shifts."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: 3x3 stem, three stages of 16/32/64 channels, global average pool, linear."""

    def __init__(self, blocks: tuple[int, int, int], num_classes: int = 10) -> None:
        super().__init__()
        self.normalize = Normalize(CIFAR_MEAN, CIFAR_STD)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = _stage(16, 16, blocks[0], 1, _pad_shortcut)
        self.layer2 = _stage(16, 32, blocks[1], 2, _pad_shortcut)
        self.layer3 = _stage(32, 64, blocks[2], 2, _pad_shortcut)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for pixels in [0, 1]."""
        x = self.relu(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ResNet(nn.Module):
    """ImageNet ResNet with basic blocks: 7x7/2 stem and 3x3/2 max pool, four stages of 64 to 512 channels."""

    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int = 1000) -> None:
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _stage(64, 64, blocks[0], 1, _conv_shortcut)
        self.layer2 = _stage(64, 128, blocks[1], 2, _conv_shortcut)
        self.layer3 = _stage(128, 256, blocks[2], 2, _conv_shortcut)
        self.layer4 = _stage(256, 512, blocks[3], 2, _conv_shortcut)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for pixels in [0, 1]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet20(num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-20 (He et al. 2016, section 4.2), about 0.27 M parameters."""
    return CifarResNet((3, 3, 3), num_classes)


def resnet34(num_classes: int = 1000) -> ResNet:
    """ImageNet ResNet-34, about 21.8 M parameters with 1000 classes."""
    return ResNet((3, 4, 6, 3), num_classes)
