"""The embedded default model (``models/resnet20-cifar10``) loads, is lossless, and classifies CIFAR-10."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from converter import load
from tests.converter.thirdparty import SHARED

DEFAULT = Path(__file__).resolve().parents[2] / "models" / "resnet20-cifar10"
ARCHIVE = SHARED / "datasets" / "cifar10-jpeg.tar.gz"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def net():
    return load(DEFAULT)


def _test_images(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` test images of every class, read straight from the shared archive."""
    taken: dict[str, list[np.ndarray]] = {c: [] for c in CLASSES}
    with tarfile.open(ARCHIVE) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if len(parts) < 4 or parts[-3] != "test" or not member.isfile():
                continue
            bucket = taken.get(parts[-2])
            if bucket is None or len(bucket) >= per_class:
                continue
            data = tar.extractfile(member).read()
            bucket.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
            if all(len(v) >= per_class for v in taken.values()):
                break
    x = torch.from_numpy(np.stack([a for c in CLASSES for a in taken[c]])).permute(0, 3, 1, 2)
    y = torch.tensor([i for i, c in enumerate(CLASSES) for _ in taken[c]])
    return x.float() / 255, y


def test_manifest_describes_a_cifar10_model(net):
    assert net.labels == CLASSES
    assert net.T == 16 and net.timesteps == net.graph.depth * 16
    acc = net.accuracy
    assert acc["images"] == 10_000
    # the lossless (clip-floor) model: the SNN's measured accuracy equals the trained ANN's
    assert abs(acc["tsc"]["16"] - acc["ann"]) <= 0.001
    assert acc["tsc"]["16"] >= 0.85


@pytest.mark.skipif(not ARCHIVE.is_file(), reason=f"shared CIFAR-10 copy not found at {ARCHIVE}")
def test_classifies_real_cifar10_images_like_the_trained_ann(net):
    x, y = _test_images(per_class=20)
    assert x.shape == (200, 3, 32, 32)
    snn = net.run(x, "fast").logits.argmax(1)
    ann = net.run(x, "ann").logits.argmax(1)
    assert (snn == y).float().mean() >= 0.8
    assert (snn == ann).float().mean() >= 0.99
