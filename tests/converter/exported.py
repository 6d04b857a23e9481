"""Small CNNs saved as users export them: TorchScript, a ``torch.export`` archive, ONNX."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tests.converter.nets import randomise_batchnorm

FORMATS = ("torchscript", "torch.export", "onnx")
SUFFIXES = {"torchscript": ".pt", "torch.export": ".pt2", "onnx": ".onnx"}


class SmallCNN(nn.Module):
    """conv, BN, ReLU, [conv, BN, + identity, ReLU], max pool, linear."""

    def __init__(self, residual: bool, size: int, classes: int) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * (size // 2) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        if self.residual:
            x = torch.relu(self.bn2(self.conv2(x)) + x)
        return self.fc(self.pool(x).flatten(1))


def small_cnn(residual: bool, size: int = 8, classes: int = 5) -> nn.Module:
    """A seeded ``SmallCNN`` with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    return randomise_batchnorm(SmallCNN(residual, size, classes))


def save(model: nn.Module, fmt: str, folder: Path, size: int, dynamic: bool = True) -> Path:
    """``model`` saved in ``folder`` as ``fmt`` for 3 x size x size images; torch.export with a fixed batch
    of one (what a plain ``export`` gives), ONNX with a dynamic batch unless ``dynamic`` is False."""
    path = folder / f"model{SUFFIXES[fmt]}"
    example = (torch.rand(1, 3, size, size),)
    if fmt == "torchscript":
        torch.jit.save(torch.jit.script(model), path)
    elif fmt == "torch.export":
        torch.export.save(torch.export.export(model, example), path)
    else:
        shapes = {"x": {0: torch.export.Dim("batch")}} if dynamic else None
        torch.onnx.export(model, example, path, dynamo=True, dynamic_shapes=shapes, verbose=False)
    return path


def file_outputs(path: Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """What the saved file computes on ``x`` in its own runtime (ONNX: onnx's reference evaluator)."""
    if fmt == "torchscript":
        return torch.jit.load(str(path))(x)
    if fmt == "torch.export":  # exported for one image at a time
        module = torch.export.load(path).module()
        return torch.cat([module(image[None]) for image in x])
    from onnx.reference import ReferenceEvaluator

    (out,) = ReferenceEvaluator(str(path)).run(None, {"x": x.numpy()})
    return torch.from_numpy(out)
