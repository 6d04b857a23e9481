"""Threshold calibration: max, percentiles and the error-minimising search, per layer or per channel."""

from __future__ import annotations

import pytest
import torch

from converter import convert
from converter.conversion.calibrate import Calibration
from tests.converter.nets import NetConfig, images, make_net


def _net(**kw):
    x = images(32, seed=2)
    return convert(make_net(NetConfig(), 2), x, T=8, **kw), x


def test_max_means_nothing_clipped():
    net, _ = _net(method="max")
    for r in net.calibration["layers"].values():
        assert r["clipped_fraction"] == 0.0
        assert r["lam"] == pytest.approx(r["max"])


def test_percentile_below_max_and_clips_about_its_tail():
    net, _ = _net(method="percentile", percentile=99.0)
    for r in net.calibration["layers"].values():
        assert r["lam"] <= r["max"]
        assert 0.0 < r["clipped_fraction"] <= 0.011


def test_per_channel_gives_one_lambda_per_channel():
    net, _ = _net(method="percentile", percentile=99.9, per_channel=True)
    for p in net.graph.neurons:
        assert net.lams[p.name].shape == (p.shape[0],)


def test_search_reduces_quantisation_error_vs_max():
    net_max, x = _net(method="max")
    net_search, _ = _net(method="search")
    ann = net_max.run(x, "ann").logits
    err = lambda n: (n.run(x).logits - ann).pow(2).mean()  # noqa: E731
    assert err(net_search) < err(net_max)


def test_unknown_method_and_bad_percentile():
    with pytest.raises(ValueError, match="unknown calibration method"):
        Calibration("median")
    with pytest.raises(ValueError, match="percentile"):
        Calibration("percentile", 150)
    assert Calibration("percentile", 99.99, True).describe() == "percentile 99.99 per-channel"
    assert torch.is_tensor(_net()[0].lams["relu"])
