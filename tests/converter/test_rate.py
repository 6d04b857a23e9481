"""The rate-coded baseline: counts per spike, and QCFS's initial potential ``v0 = theta / 2``."""

from __future__ import annotations

import torch

from converter import convert
from tests.converter.nets import NetConfig, images, make_net


def _net():
    x = images(64, seed=11)
    return convert(make_net(NetConfig(pool="none"), 11), x, T=8, method="max"), x


def test_half_threshold_start_approaches_the_ann_sooner():
    net, x = _net()
    ann = net.run(x, "ann").logits
    for steps in (8, 16, 32):
        plain, half = (net.run_rate(x, [steps], v0)[0].logits for v0 in (0.0, 0.5))
        assert (half - ann).abs().mean() < (plain - ann).abs().mean(), steps


def test_v0_zero_is_the_classic_conversion_and_more_steps_cost_more():
    net, x = _net()
    a = net.run(x, "rate", rate_steps=16)
    b = net.run_rate(x, [16], 0.0)[0]
    assert torch.equal(a.logits, b.logits) and torch.equal(a.synaptic_additions, b.synaptic_additions)
    short, long = net.run_rate(x, [8, 32], 0.5)
    assert short.timesteps == 8 and long.timesteps == 32
    assert bool((long.spikes >= short.spikes).all()) and bool((long.synaptic_additions > 0).all())
