"""Error-aware calibration: thresholds chosen on quantised inputs; bias corrections for the SNN only."""

from __future__ import annotations

import pytest
import torch

from converter import convert, load
from tests.converter.nets import NetConfig, images, make_net


@pytest.fixture(scope="module")
def model_and_images():
    return make_net(NetConfig(channels=6), 4), images(64, seed=4)


def _logit_error(net, x):
    return float((net.run(x).logits - net.run(x, "ann").logits).pow(2).mean())


@pytest.mark.parametrize("T", [2, 3, 5])
def test_error_at_the_output_is_below_percentile_calibration(model_and_images, T):
    model, x = model_and_images
    plain = convert(model, x, T=T, method="percentile", percentile=99.99)
    aware = convert(model, x, T=T, method="error-aware")
    assert _logit_error(aware, x) < _logit_error(plain, x)
    assert aware.calibration["method"] == "error-aware + bias correction"
    for name, r in aware.calibration["layers"].items():
        # the threshold chosen is the candidate with the smallest logit error
        assert r["lam"] is not None and min(r["logit_mse_by_candidate"].values()) >= 0, name


def test_bias_correction_lowers_the_error_and_leaves_the_ann_alone(model_and_images):
    model, x = model_and_images
    without = convert(model, x, T=3, method="error-aware", bias_correction=False)
    with_c = convert(model, x, T=3, method="error-aware")
    assert without.corrections == {} and set(with_c.corrections) == {p.name for p in with_c.graph.neurons} | {
        with_c.graph.output.name
    }
    assert _logit_error(with_c, x) < _logit_error(without, x)
    with torch.no_grad():  # the ANN engine is the model as trained: corrections belong to the SNN only
        torch.testing.assert_close(with_c.run(x, "ann").logits, model(x), rtol=1e-4, atol=1e-4)


def test_corrections_are_identical_in_fast_and_stepped_and_survive_a_checkpoint(model_and_images, tmp_path):
    model, x = model_and_images
    net = convert(model, x, T=3, method="error-aware").to(torch.float64)
    net = net.with_windows({k: 2 + i % 3 for i, k in enumerate(net.windows)})
    xd = x[:4].double()
    fast, stepped = net.run(xd, keep_durations=True), net.run(xd, "stepped", keep_durations=True)
    for name in fast.durations:
        assert torch.equal(fast.durations[name], stepped.durations[name]), name
    torch.testing.assert_close(fast.logits, stepped.logits, rtol=1e-9, atol=1e-9)
    net.save(tmp_path / "aware")
    again = load(tmp_path / "aware")
    assert again.corrections.keys() == net.corrections.keys()
    assert torch.equal(again.run(xd).logits, fast.logits)


def test_a_clip_floor_trained_net_stays_lossless():
    """Trained thresholds are kept and the corrections vanish: the SNN is exactly the network as trained."""
    from converter.training.clipfloor import clip_floor_init

    x = images(64, seed=1)
    trained = clip_floor_init(make_net(NetConfig(4, pool="max"), 1), x, T=4)
    net = convert(trained, x, T=4, method="error-aware").to(torch.float64)
    assert all(c.abs().max() < 1e-6 for c in net.corrections.values())
    xd = x.double()
    torch.testing.assert_close(net.run(xd).logits, net.run(xd, "ann").logits, rtol=1e-6, atol=1e-6)
