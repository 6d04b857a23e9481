"""Every zoo model converts: its ANN engine reproduces the model, and the TSC graph has the expected depth."""

from __future__ import annotations

import pytest
import torch

from converter import convert
from converter.training.models import build_model, input_size
from tests.converter.nets import randomise_batchnorm

# (name, weight layers on the longest path, max-pool switches, input side used here)
ZOO = [("resnet20", 20, 0, 32), ("vgg16", 14, 5, 32), ("resnet34", 34, 1, 64), ("vgg16-imagenet", 16, 5, 224)]


@pytest.mark.parametrize(("name", "depth", "switches", "side"), ZOO)
def test_zoo_model_converts(name, depth, switches, side):
    torch.manual_seed(0)
    model = randomise_batchnorm(build_model(name, num_classes=7))
    channels = input_size(name)[0]
    x = torch.rand(2, channels, side, side)
    net = convert(model, x, T=4, method="max")
    assert net.graph.depth == depth
    assert sum(p.kind == "switch" for p in net.graph.populations) == switches
    with torch.no_grad():
        torch.testing.assert_close(net.run(x, "ann").logits, model(x), rtol=1e-3, atol=1e-3)
    res = net.run(x)
    assert res.logits.shape == (2, 7) and res.timesteps == depth * 4
    assert (res.synaptic_additions > 0).all()
