"""The spike raster: on at ``end - d``, off at the window's end, silence for ``d = 0`` (spec section 2)."""

from __future__ import annotations

import pytest

from converter import convert
from converter.snn.raster import spike_raster
from tests.converter.nets import NetConfig, images, make_net


def test_raster_reads_spike_steps_from_durations_and_windows():
    cfg = NetConfig(pool="max")
    x = images(4, cfg.size, 3)
    net = convert(make_net(cfg, 3), x, T=6)
    result = net.run(x, "stepped", keep_durations=True)
    layers = spike_raster(net, result.durations, image=2, neurons_per_layer=5, seed=1)
    assert [r.name for r in layers] == [
        p.name for p in net.graph.populations if p.kind in ("input", "neuron")
    ]
    for r in layers:
        d = result.durations[r.name][2].flatten()
        assert len(r.neurons) == min(5, d.numel()) and r.neurons == sorted(set(r.neurons))
        assert r.end - r.start == net.window(r.name) and r.off == r.end
        for i, on in zip(r.neurons, r.on, strict=True):
            assert on == (r.end - int(d[i]) if d[i] > 0 else None)
            assert on is None or r.start <= on < r.end
    assert any(on is not None for r in layers for on in r.on)
    again = spike_raster(
        net, net.run(x, "fast", keep_durations=True).durations, image=2, neurons_per_layer=5, seed=1
    )
    assert again == layers  # the fast engine's durations give the same raster


def test_raster_size_is_bounded():
    cfg = NetConfig()
    x = images(2, cfg.size)
    net = convert(make_net(cfg), x, T=4)
    durations = net.run(x, keep_durations=True).durations
    with pytest.raises(ValueError, match="neurons_per_layer"):
        spike_raster(net, durations, neurons_per_layer=10_000)
