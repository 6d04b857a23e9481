"""Synapse counts equal a brute-force count of the composite (folded) weights, written independently here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from converter import convert
from converter.snn.counting import term_fanout
from tests.converter.nets import NetConfig, images, make_net
from tests.converter.synapses import assert_exact_counts, brute_force_fanouts


def _dense_fanout(fn, shape):
    """Nonzeros per column of the Jacobian of a linear map, one basis vector at a time (float64)."""
    n = torch.Size(shape).numel()
    basis = torch.eye(n, dtype=torch.float64).view(n, *shape)
    out = fn(basis).reshape(n, -1)  # row j = image of source j
    return (out != 0).sum(1).view(shape).double()


class PoolConvNet(nn.Module):
    """Strided conv with borders, avg-pool folded into a strided conv, global pool folded into linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = F.relu(self.c1(x))  # 9x9 -> 5x5
        x = F.relu(self.c2(F.avg_pool2d(x, 2)))  # 5x5 -> pool 2x2 (last row/col dropped) -> 1x1
        return self.fc(x.mean((2, 3)))


def test_counts_match_brute_force_on_folded_pooling_and_borders():
    torch.manual_seed(0)
    model = PoolConvNet().eval()
    x = torch.rand(6, 2, 9, 9)
    net = convert(model, x, T=8, method="max")
    res = net.run(x, keep_durations=True)
    c1 = lambda a: F.conv2d(a, model.c1.weight.double(), stride=2, padding=1)  # noqa: E731
    c2 = lambda a: F.conv2d(F.avg_pool2d(a, 2), model.c2.weight.double(), stride=2, padding=1)  # noqa: E731
    fc = lambda a: F.linear(a.mean((2, 3)), model.fc.weight.double())  # noqa: E731
    expected_fanout = {
        "input": _dense_fanout(c1, (2, 9, 9)),
        net.graph.neurons[0].name: _dense_fanout(c2, (3, 5, 5)),
        net.graph.neurons[1].name: _dense_fanout(fc, (4, 1, 1)),
    }
    # the pooled map drops the 5th row/column: it reaches nothing; corners reach fewer than the centre
    assert expected_fanout[net.graph.neurons[0].name][:, 4, :].sum() == 0
    for layer in res.layers:
        if layer.name not in expected_fanout:
            continue
        active = (res.durations[layer.name] > 0).double().flatten(1)
        brute = 2 * (active @ expected_fanout[layer.name].flatten()).long()
        assert torch.equal(layer.synaptic_additions, brute), layer.name
        assert torch.equal(
            layer.synaptic_additions,
            res.layers[[x.name for x in res.layers].index(layer.name)].synaptic_additions,
        )
    assert torch.equal(res.memory_accesses, res.synaptic_additions)


def test_every_term_fanout_matches_dense_jacobian():
    for cfg in (
        NetConfig(pool="avg", stride=2, padding=0),
        NetConfig(pool="max", kernel=1, residual=False),
        NetConfig(residual=True, size=6, stride=2),
        NetConfig(concat=True, act="relu6", pool="max"),
    ):
        x = images(4, cfg.size)
        net = convert(make_net(cfg), x, T=4)
        for p in net.graph.populations:
            for t in p.terms:
                src = net.graph.by_name[t.source].shape
                ops = [op.to(torch.float64) for op in t.ops]

                def linear(a, ops=ops):
                    for op in ops:
                        a = op.forward(a, bias=False)
                    return a

                assert torch.equal(term_fanout(t, src), _dense_fanout(linear, src)), (cfg, p.name, t.source)


def test_pruned_weights_are_not_synapses():
    torch.manual_seed(1)
    model = PoolConvNet().eval()
    with torch.no_grad():
        model.c1.weight[:, 0] = 0  # input channel 0 drives nothing
    x = torch.rand(3, 2, 9, 9)
    net = convert(model, x, T=4)
    assert net.fanouts["input"].view(2, 9, 9)[0].sum() == 0
    assert net.fanouts["input"].view(2, 9, 9)[1].sum() > 0


def test_ann_macs_dense_count():
    model = PoolConvNet().eval()
    net = convert(model, torch.rand(2, 2, 9, 9), T=4)
    # c1: 3 x 5 x 5 outputs x (2*3*3); c2: 4 x 1 x 1 x (3*3*3); fc: 4 x 3
    assert net.ann_macs == 3 * 25 * 18 + 4 * 27 + 12


class PreActBlock(torch.nn.Module):
    """A pre-activation residual step: conv1's output feeds a BN-ReLU and the shortcut."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(3)
        self.c2 = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.fc = torch.nn.Linear(3 * 5 * 5, 4)

    def forward(self, x):
        y = self.c1(x)
        z = self.c2(torch.relu(self.bn(y))) + y
        return self.fc(torch.relu(z).flatten(1))


def test_ann_macs_count_a_shared_conv_once():
    net = convert(PreActBlock().eval(), torch.rand(2, 2, 5, 5), T=4)
    assert sum(1 for p in net.graph.populations for t in p.terms for op in t.ops if op.kind == "conv2d") == 3
    # c1 (in two chains, computed once): 3 x 25 x 18; c2: 3 x 25 x 27; fc: 4 x 75
    assert net.ann_macs == 3 * 25 * 18 + 3 * 25 * 27 + 4 * 75


class SpreadTwice(nn.Module):
    """A conv then an overlapping average pool before the ReLU, and a layer fed twice by one source."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 5 * 5, 4)

    def forward(self, x):
        a = F.relu(F.avg_pool2d(self.c1(x), 3, stride=1, padding=1))  # a centre pixel reaches 5x5, not 81
        b = F.relu(self.c2(a) + 0.5 * a)  # two paths from a: the identity pair is one synapse
        return self.fc(b.flatten(1))


def test_counts_are_distinct_synapses_through_overlapping_pools_and_parallel_terms():
    torch.manual_seed(3)
    net = convert(SpreadTwice().eval(), torch.rand(4, 2, 5, 5), T=4)
    assert_exact_counts(net)
    centre = net.fanouts["input"].view(2, 5, 5)[0, 2, 2]
    assert centre == 3 * 5 * 5  # 3 channels x the 5x5 pixels a 3x3 conv then a 3x3 pool reach


def test_groups_too_large_to_probe_fall_back_to_path_counts_with_a_warning(monkeypatch):
    import converter.snn.counting as counting

    monkeypatch.setattr(counting, "PROBE_BUDGET", 10)
    torch.manual_seed(3)
    with pytest.warns(UserWarning, match="counted per path"):
        net = convert(SpreadTwice().eval(), torch.rand(4, 2, 5, 5), T=4)
    exact = brute_force_fanouts(net)
    assert all(bool((net.fanouts[k] >= exact[k]).all()) for k in exact)
    assert any(bool((net.fanouts[k] > exact[k]).any()) for k in exact)


class CroppedBottleneck(nn.Module):
    """A spatial crop (negative padding) before two 1x1 convs: not a pointwise chain."""

    def __init__(self):
        super().__init__()
        self.c1, self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 2, 1), nn.Conv2d(2, 3, 1)
        self.fc = nn.Linear(3 * 3 * 3, 2)

    def forward(self, x):
        h = F.relu(self.c1(x))
        return self.fc(F.relu(self.b(self.a(F.pad(h, (0, 0, -1, -1))))).flatten(1)[:, :27])


def test_spatial_pads_are_not_taken_for_channel_pads():
    torch.manual_seed(0)
    net = convert(CroppedBottleneck().eval(), torch.rand(3, 2, 5, 3), T=4)
    assert_exact_counts(net)
