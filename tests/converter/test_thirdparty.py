"""The third-party ResNet-20 (functional ReLUs, option-A shortcut, normalisation in forward) converts."""

from __future__ import annotations

import pytest
import torch

from benchmarks.thirdparty import CHECKPOINT, load_resnet20
from converter import convert, load

pytestmark = pytest.mark.skipif(
    not CHECKPOINT.exists(), reason=f"third-party checkpoint not found at {CHECKPOINT}"
)


@pytest.fixture(scope="module")
def model_and_net():
    model = load_resnet20()
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return model, convert(model, x, T=16, method="max"), x


def test_structure(model_and_net):
    _, net, _ = model_and_net
    assert len(net.graph.neurons) == 19 and net.graph.depth == 20
    assert net.timesteps == 20 * 16
    assert net.ann_macs == 40_551_040  # 40.55 M multiply-accumulates, conv and linear
    assert net.graph.output.shape == (10,)


def test_ann_engine_matches_the_model(model_and_net):
    model, net, x = model_and_net
    with torch.no_grad():
        torch.testing.assert_close(net.run(x, "ann").logits, model(x), rtol=1e-4, atol=1e-4)


def test_fast_equals_stepped_on_resnet20(model_and_net):
    _, net, x = model_and_net
    net = net.with_timesteps(4).to(torch.float64)
    fast = net.run(x[:2].double(), keep_durations=True)
    stepped = net.run(x[:2].double(), "stepped", keep_durations=True)
    for k in fast.durations:
        assert torch.equal(fast.durations[k], stepped.durations[k]), k
    assert torch.equal(fast.synaptic_additions, stepped.synaptic_additions)
    assert torch.equal(fast.spikes, stepped.spikes)


def test_round_trip(model_and_net, tmp_path):
    _, net, x = model_and_net
    net.save(tmp_path / "r20")
    torch.testing.assert_close(load(tmp_path / "r20").run(x).logits, net.run(x).logits, rtol=0, atol=0)
