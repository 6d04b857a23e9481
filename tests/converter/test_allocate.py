"""Window allocation (``T="auto"``): fewest total timesteps within an accuracy budget on held-out images."""

from __future__ import annotations

import pytest

from converter import convert
from converter.snn.windows import windows_on_longest_path
from tests.converter.nets import NetConfig, images, make_net


@pytest.fixture(scope="module")
def auto():
    model = make_net(NetConfig(channels=6), 7)
    x, held = images(64, seed=7), images(200, seed=8)
    labels = model(held).argmax(1)  # the ANN is 100% right on these: the budget is agreement with it
    net = convert(model, x, T="auto", holdout=(held, labels), max_drop=2.0, max_T=16, method="percentile")
    return net, held, labels


def _accuracy(net, x, y, engine="fast"):
    return float((net.run(x, engine).logits.argmax(1) == y).double().mean())


def test_result_is_within_the_budget_on_the_holdout(auto):
    net, held, labels = auto
    report = net.calibration["allocation"]
    assert report["within_budget"] and report["ann_accuracy"] == 1.0
    assert _accuracy(net, held, labels) >= 1.0 - 2.0 / 100 - 1e-12
    assert report["accuracy"] == _accuracy(net, held, labels)
    assert report["windows"] == net.windows and report["timesteps"] == net.timesteps


def test_no_uniform_window_within_the_budget_is_shorter(auto):
    net, _, _ = auto
    report = net.calibration["allocation"]
    uniform = [e for e in report["evaluations"] if e["stage"].startswith("uniform")]
    passing = [e["timesteps"] for e in uniform if e["accuracy"] >= 0.98]
    assert passing and net.timesteps <= min(passing)
    for e in report["evaluations"]:  # every configuration measured is recorded with its latency
        assert e["timesteps"] == sum(e["windows"].values()) or not e["stage"].startswith("uniform")


def test_a_budget_that_cannot_be_met_is_reported():
    model = make_net(NetConfig(), 9)
    x = images(64, seed=9)
    net = convert(model, x, T="auto", holdout=(x, model(x).argmax(1)), max_drop=0.0, max_T=1)
    report = net.calibration["allocation"]
    assert report["accuracy"] < 1.0  # one level per layer cannot reproduce the ANN on every image
    assert not report["within_budget"] and set(net.windows.values()) == {1}


def test_bad_T_is_refused():
    model = make_net(NetConfig(), 9)
    with pytest.raises(ValueError, match="auto"):
        convert(model, images(4), T="fast")


# ---------------------------------------------------------------- fixed latency (T="latency:N")


@pytest.fixture(scope="module")
def latency_case():
    model = make_net(NetConfig(channels=6), 7)
    x, held = images(64, seed=7), images(200, seed=8)
    return model, x, (held, model(held).argmax(1))


@pytest.mark.parametrize("extra", [0, 1, 2, "all but one"])
def test_latency_is_exactly_the_target(latency_case, extra):
    model, x, holdout = latency_case
    graph_depth = windows_on_longest_path(convert(model, x, T=1).graph)
    extra = graph_depth - 1 if extra == "all but one" else extra
    target = 3 * graph_depth + extra
    net = convert(model, x, T=f"latency:{target}", holdout=holdout)
    report = net.calibration["allocation"]
    assert net.timesteps == target == report["timesteps"] == report["target_timesteps"]
    assert set(net.windows.values()) <= {3, 4} and report["base_window"] == 3
    assert sum(v == 4 for v in net.windows.values()) == extra  # every window lies on the longest path here
    assert report["windows"] == net.windows and bool(report["logit_error_gain"]) == bool(extra)
    assert report["accuracy"] == _accuracy(net, *holdout)


def test_spare_steps_go_where_the_logit_error_falls_most(latency_case):
    model, x, holdout = latency_case
    depth = windows_on_longest_path(convert(model, x, T=1).graph)
    net = convert(model, x, T=f"latency:{2 * depth + 2}", holdout=holdout)
    gains = net.calibration["allocation"]["logit_error_gain"]
    assert set(gains) == set(net.windows) and len(set(gains.values())) > 1
    widened = {name for name, w in net.windows.items() if w == 3}
    assert widened == set(sorted(gains, key=gains.__getitem__, reverse=True)[:2])


def test_impossible_or_malformed_latency_is_refused(latency_case):
    model, x, holdout = latency_case
    depth = windows_on_longest_path(convert(model, x, T=1).graph)
    with pytest.raises(ValueError, match=f"less than one step for each of the {depth} windows"):
        convert(model, x, T=f"latency:{depth - 1}", holdout=holdout)
    for bad in ("latency:0", "latency:x", "latency:-4"):
        with pytest.raises(ValueError, match="latency:N"):
            convert(model, x, T=bad)
