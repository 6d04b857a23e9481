"""The embedded default model (``models/resnet20-cifar10``) loads, is lossless, and classifies CIFAR-10."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.thirdparty import SHARED
from converter import load
from converter.training.datasets import open_dataset, to_float
from service.settings import Settings

DEFAULT = Path(__file__).resolve().parents[2] / "models" / "resnet20-cifar10"
# the original CIFAR-10 pixels (repacked official binary layout): the reference test set
ARCHIVE = SHARED / "datasets" / "cifar10-binary-lossless.tar.gz"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Least test accuracy the manifest may record, on the original test set, as served (90.31% TSC = its
# clip-floor ANN, fast engine in float64: ResNet-20 trained here on the original pixels, 120 epochs of one
# cosine schedule with an EMA of the weights (ANN 92.18%), then clip-floor T=16 for 2).
MANIFEST_MIN_ACCURACY = 0.90
# Least accuracy on the first 50 lossless test images of each class (the shipped model: 92.8%).
REAL_IMAGES_MIN_ACCURACY = 0.90


@pytest.fixture(scope="module")
def net():
    return load(DEFAULT)


def _test_images(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` test images of every class, read packed from the shared lossless archive."""
    if not ARCHIVE.is_file():
        pytest.skip(f"shared lossless CIFAR-10 archive not found at {ARCHIVE}")
    test = open_dataset(f"cifar10:{ARCHIVE}", "test")
    assert test.classes == CLASSES
    index = torch.cat([torch.nonzero(test.labels == k).flatten()[:per_class] for k in range(len(CLASSES))])
    return to_float(test.images[index]), test.labels[index]


def test_manifest_describes_a_cifar10_model(net):
    assert net.labels == CLASSES
    # low-T trained: every layer's window is the number of levels it was trained with
    trained = {p.name: p.quantised[0] for p in net.graph.populations if p.kind in ("input", "neuron")}
    assert net.windows == trained and net.timesteps == net.schedule.total
    acc = net.accuracy
    assert acc["images"] == 10_000 and "cifar10-binary-lossless" in acc["dataset"]
    # measured as it is served: the fast engine in the service's default precision
    assert (acc["engine"], acc["precision"]) == ("fast", Settings.model_fields["precision"].default)
    # the lossless (clip-floor) model: the SNN's measured accuracy equals the trained ANN's
    (tsc,) = acc["tsc"].values()
    assert abs(tsc - acc["ann"]) <= 0.001
    assert tsc >= MANIFEST_MIN_ACCURACY


def test_classifies_real_cifar10_images_like_the_trained_ann(net):
    x, y = _test_images(per_class=50)
    assert x.shape == (500, 3, 32, 32)
    snn = net.run(x, "fast").logits.argmax(1)
    ann = net.run(x, "ann").logits.argmax(1)
    assert (snn == y).float().mean() >= REAL_IMAGES_MIN_ACCURACY
    assert (ann == y).float().mean() >= REAL_IMAGES_MIN_ACCURACY
    assert (snn == ann).float().mean() >= 0.99
