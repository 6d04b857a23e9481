"""VGG-16 with batch norm: a CIFAR variant (32 px, linear head) and the ImageNet one (224 px)."""

from __future__ import annotations

import torch
from torch import nn

from converter.training.models.normalize import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, Normalize

VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


def make_features(cfg: tuple[int | str, ...], conv_bias: bool) -> nn.Sequential:
    """3x3 conv -> batch norm -> ReLU per number in ``cfg``, 2x2 max pool per "M"."""
    layers: list[nn.Module] = []
    channels = 3
    for item in cfg:
        if isinstance(item, int):
            conv = nn.Conv2d(channels, item, 3, padding=1, bias=conv_bias)
            layers += [conv, nn.BatchNorm2d(item), nn.ReLU()]
            channels = item
        else:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """Normalize, convolutional features, optional adaptive pooling, then the classifier."""

    def __init__(
        self, normalize: Normalize, features: nn.Sequential, avgpool: nn.Module | None, classifier: nn.Module
    ) -> None:
        super().__init__()
        self.normalize = normalize
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for pixels in [0, 1]."""
        x = self.features(self.normalize(x))
        if self.avgpool is not None:
            x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))


def vgg16(num_classes: int = 10) -> VGG:
    """CIFAR VGG-16 with batch norm (no conv biases) and a single Linear(512, classes) head."""
    features = make_features(VGG16_CFG, False)
    return VGG(Normalize(CIFAR_MEAN, CIFAR_STD), features, None, nn.Linear(512, num_classes))


def vgg16_imagenet(num_classes: int = 1000) -> VGG:
    """ImageNet VGG-16 with batch norm, laid out like torchvision's ``vgg16_bn`` so its weights load."""
    classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 4096),
        nn.ReLU(),
        nn.Dropout(),
        nn.Linear(4096, 4096),
        nn.ReLU(),
        nn.Dropout(),
        nn.Linear(4096, num_classes),
    )
    features = make_features(VGG16_CFG, True)
    return VGG(Normalize(IMAGENET_MEAN, IMAGENET_STD), features, nn.AdaptiveAvgPool2d(7), classifier)
