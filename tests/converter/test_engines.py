"""The fast (closed-form) and stepped (event) engines agree exactly in float64 (spec section 7)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from converter import convert
from tests.converter.nets import NetConfig, images, make_net

configs = st.builds(
    NetConfig,
    channels=st.integers(1, 4),
    kernel=st.sampled_from([1, 3]),
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    bias=st.booleans(),
    batchnorm=st.booleans(),
    residual=st.booleans(),
    pool=st.sampled_from(["avg", "max", "none"]),
    size=st.sampled_from([6, 8]),
    act=st.sampled_from(["relu", "relu6", "clamp"]),
    concat=st.booleans(),
)


def _both(cfg: NetConfig, seed: int, T: int, shift: float, per_channel: bool = False, windows_seed=None):
    x = images(4, cfg.size, seed)
    net = convert(make_net(cfg, seed), x, T=T, shift=shift, percentile=99.0, per_channel=per_channel)
    net = net.to(torch.float64)
    if windows_seed is not None:
        g = torch.Generator().manual_seed(windows_seed)
        choices = [1, 2, 3, 5, 8]
        net = net.with_windows({k: choices[int(torch.randint(5, (), generator=g))] for k in net.windows})
    fast = net.run(x.double(), "fast", keep_durations=True)
    stepped = net.run(x.double(), "stepped", keep_durations=True)
    return net, fast, stepped


def assert_identical(fast, stepped) -> None:
    """Fast and stepped agree on every duration, logit, spike and addition."""
    assert fast.durations.keys() == stepped.durations.keys()
    for name in fast.durations:
        assert torch.equal(fast.durations[name], stepped.durations[name]), name
    torch.testing.assert_close(fast.logits, stepped.logits, rtol=1e-9, atol=1e-9)
    for a, b in zip(fast.layers, stepped.layers, strict=True):
        assert a.name == b.name
        assert torch.equal(a.spikes, b.spikes), a.name
        assert torch.equal(a.synaptic_additions, b.synaptic_additions), a.name
        assert a.neuron_updates == b.neuron_updates
    assert fast.timesteps == stepped.timesteps


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cfg=configs,
    seed=st.integers(0, 10_000),
    T=st.sampled_from([1, 2, 3, 5, 8]),
    shift=st.sampled_from([0, 0.5]),
    per_channel=st.booleans(),
)
# a channel fed by a dead one is its constant bias, so its lam equals it: every neuron sits on a level
@example(cfg=NetConfig(3, 1, 1, 0, True, True, False, "avg", 6, 5), seed=0, T=1, shift=0, per_channel=True)
def test_fast_equals_stepped(cfg, seed, T, shift, per_channel):
    net, fast, stepped = _both(cfg, seed, T, shift, per_channel)
    assert_identical(fast, stepped)
    assert fast.timesteps == net.graph.depth * T


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cfg=configs,
    seed=st.integers(0, 10_000),
    windows_seed=st.integers(0, 10_000),
    shift=st.sampled_from([0, 0.5]),
    per_channel=st.booleans(),
)
def test_fast_equals_stepped_with_mixed_windows(cfg, seed, windows_seed, shift, per_channel):
    net, fast, stepped = _both(cfg, seed, 5, shift, per_channel, windows_seed)
    assert_identical(fast, stepped)
    for name, d in fast.durations.items():
        assert d.max() <= net.window(name), name


def test_mixed_windows_latency_is_the_longest_path_sum():
    net, _, _ = _both(NetConfig(residual=True), 0, 8, 0.5)
    names = [p.name for p in net.graph.populations if p.kind in ("input", "neuron")]
    assert len(names) == 4  # input, relu after conv1, relu after conv2 + shortcut, relu after conv3
    windows = dict(zip(names, [3, 7, 2, 5], strict=True))
    mixed = net.with_windows(windows)
    # longest path input -> conv1 -> conv2 -> conv3 -> fc: every window once; the shortcut adds none
    assert mixed.timesteps == 3 + 7 + 2 + 5
    x = images(4, 8, 0).double()
    assert_identical(mixed.run(x, "fast", keep_durations=True), mixed.run(x, "stepped", keep_durations=True))
    # per neuron: it integrates over the longest window of its sources, then speaks in its own
    updates = {layer.name: layer.neuron_updates for layer in mixed.run(x, "fast").layers}
    sizes = {p.name: p.size for p in net.graph.populations}
    assert updates[names[1]] == (3 + 7) * sizes[names[1]]
    assert updates[names[2]] == (7 + 2) * sizes[names[2]]  # shortcut (T=7) and conv2's source (T=7)
    assert updates[net.graph.output.name] == 5 * sizes[net.graph.output.name]


def test_uniform_windows_equal_with_timesteps():
    net, _, _ = _both(NetConfig(), 2, 8, 0.5)
    x = images(4, 8, 2).double()
    a = net.with_timesteps(4).run(x, "fast", keep_durations=True)
    b = net.with_windows(dict.fromkeys(net.windows, 4)).run(x, "fast", keep_durations=True)
    assert all(torch.equal(a.durations[k], b.durations[k]) for k in a.durations)


@pytest.mark.parametrize("bad", [{"input": 0}, {"nope": 3}, {"input": 2.5}])
def test_bad_windows_are_refused(bad):
    net, _, _ = _both(NetConfig(), 2, 8, 0.5)
    with pytest.raises(ValueError, match="window"):
        net.with_windows({**net.windows, **bad})


def test_durations_are_tsc_codes():
    _, fast, _ = _both(NetConfig(), 3, 8, 0.5)
    for d in fast.durations.values():
        assert torch.equal(d, d.round()) and d.min() >= 0 and d.max() <= 8
    # input pixels: d = floor(T * x + s)
    x = images(4, 8, 3).double()
    assert torch.equal(fast.durations["input"], torch.clamp(torch.floor(8 * x + 0.5), 0, 8))


def test_spikes_are_two_per_active_neuron():
    _, fast, _ = _both(NetConfig(pool="max"), 5, 4, 0.0)
    for layer in fast.layers:
        if layer.kind in ("input", "neuron"):
            active = (fast.durations[layer.name].flatten(1) > 0).sum(1)
            assert torch.equal(layer.spikes, 2 * active), layer.name
        else:
            assert int(layer.spikes.sum()) == 0  # switches route spikes, they are not neurons


def test_latency_counts_weight_layers_on_longest_path():
    net, fast, _ = _both(NetConfig(residual=True), 0, 8, 0.5)
    # conv1, conv2, conv3, fc: four weight layers; the residual shortcut adds no window
    assert net.graph.depth == 4 and fast.timesteps == 32


def test_neuron_updates_are_2T_per_neuron_and_T_per_output():
    net, fast, _ = _both(NetConfig(), 1, 8, 0.5)
    expected = sum(2 * 8 * p.size for p in net.graph.neurons) + 8 * net.graph.output.size
    assert fast.neuron_updates == expected


@pytest.mark.parametrize("bias", [0.7, 1.3, 2.9, 0.123])
def test_exact_level_boundaries_are_reached_in_every_engine(bias):
    """A constant channel calibrated to its own value lies exactly on level T: both engines say d = T.

    In float64, the spec's arithmetic; float32, whose rounding (about 1e-6 of a level) is far above the
    spec's tolerance of 1e-9, may land one level below, never further (spec sections 2 and 7).
    """
    cfg = NetConfig(channels=2, kernel=1, padding=0, batchnorm=False, pool="none")
    model = make_net(cfg, 1)
    with torch.no_grad():
        model.conv1.weight.zero_()
        model.conv1.bias.fill_(bias)  # no exact binary form: folded, T * z / lam rounds to either side of T
    x = images(3, cfg.size, 1)
    for T in (1, 3, 5, 16):
        net = convert(model, x, T=T, shift=0.0, percentile=99.0)
        durations = {}
        for dtype in (torch.float32, torch.float64):
            for engine in ("fast", "stepped"):
                run = net.to(dtype).run(x.to(dtype), engine, keep_durations=True)
                first = next(n for n in run.durations if n != "input")
                durations[engine, dtype] = run.durations[first]
        for engine in ("fast", "stepped"):
            exact = durations[engine, torch.float64]
            assert torch.equal(exact, torch.full_like(exact, T)), (T, engine)
            assert (exact - durations[engine, torch.float32]).abs().max() <= 1, (T, engine)


def test_a_network_moved_to_a_device_computes_there_with_the_same_answers():
    cfg = NetConfig(pool="max")
    x = images(4, cfg.size, 2)
    net = convert(make_net(cfg, 2), x, T=6)
    moved = net.to(device="cpu")
    assert moved.device == torch.device("cpu") and net.to(torch.float64).device == torch.device("cpu")
    for engine in ("fast", "stepped", "rate", "ann"):
        a, b = net.run(x, engine), moved.run(x, engine)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.synaptic_additions, b.synaptic_additions)


@pytest.mark.parametrize(
    "model",
    [
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)),  # no neuron layer, no lam
        torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()),  # no weight at all
    ],
)
@pytest.mark.parametrize("engine", ["fast", "stepped", "rate", "ann"])
def test_a_network_without_neurons_computes_in_the_precision_it_is_cast_to(model, engine):
    net = convert(model.eval(), images(8), T=4)
    assert net.dtype == torch.float32
    double = net.to(torch.float64)
    assert double.dtype == torch.float64 and net.dtype == torch.float32
    assert double.run(images(2), engine).logits.dtype == torch.float64
