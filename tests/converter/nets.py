"""Small networks made in code for the converter tests, covering every supported layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class NetConfig:
    """Shape of a random test network."""

    channels: int = 4
    kernel: int = 3
    stride: int = 1
    padding: int = 1
    bias: bool = True
    batchnorm: bool = True
    residual: bool = True
    pool: str = "avg"  # "avg", "max" or "none"
    size: int = 8
    classes: int = 5
    act: str = "relu"  # first activation: "relu", "relu6" or "clamp" (clamp(0, 0.75))
    concat: bool = False  # a DenseNet-style channel concatenation, squeezed back by a 1x1 conv


class SmallNet(nn.Module):
    """conv, [BN], act, [cat with conv-ReLU, 1x1 conv, ReLU], conv, [BN] (+ identity), ReLU, pool,
    strided conv, ReLU, global pool, linear."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        c = cfg.channels
        self.cfg = cfg
        self.conv1 = nn.Conv2d(3, c, cfg.kernel, 1, cfg.kernel // 2, bias=cfg.bias)
        self.bn1 = nn.BatchNorm2d(c) if cfg.batchnorm else nn.Identity()
        self.conv2 = nn.Conv2d(c, c, cfg.kernel, 1, cfg.kernel // 2, bias=cfg.bias)
        self.bn2 = nn.BatchNorm2d(c) if cfg.batchnorm else nn.Identity()
        self.pool = {"avg": nn.AvgPool2d(2), "max": nn.MaxPool2d(2), "none": nn.Identity()}[cfg.pool]
        self.conv3 = nn.Conv2d(c, 2 * c, cfg.kernel, cfg.stride, cfg.padding, bias=cfg.bias)
        self.fc = nn.Linear(2 * c, cfg.classes)
        if cfg.concat:
            self.grow = nn.Conv2d(c, c, 3, 1, 1, bias=cfg.bias)
            self.squeeze = nn.Conv2d(2 * c, c, 1, bias=cfg.bias)

    def forward(self, x):
        x = self.bn1(self.conv1(x))
        x = {"relu": F.relu, "relu6": F.relu6, "clamp": lambda v: v.clamp(0, 0.75)}[self.cfg.act](x)
        if self.cfg.concat:
            x = F.relu(self.squeeze(torch.cat([x, F.relu(self.grow(x))], dim=1)))
        y = self.bn2(self.conv2(x))
        if self.cfg.residual:
            y = y + x
        x = self.pool(torch.relu(y))
        x = F.relu(self.conv3(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    return model.eval()


def make_net(cfg: NetConfig, seed: int = 0) -> nn.Module:
    """A SmallNet with seeded random weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    return randomise_batchnorm(SmallNet(cfg), seed)


def images(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    """Random pixels in [0, 1]."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
