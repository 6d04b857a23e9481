"""Reconstruction calibration: blocks, a lower output error than error-aware, the same synapses, exact."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from converter import convert, load
from converter.conversion.reconstruct import blocks
from converter.training.models import build_model
from tests.converter.nets import NetConfig, images, make_net
from tests.converter.test_engines import assert_identical


def _sources(p):
    return [p.source] if p.kind == "switch" else [t.source for t in p.terms]


@pytest.fixture(scope="module")
def pruned_model():
    """A residual net with half of one conv's weights zero (the synapses the reconstruction must not add)."""
    model = make_net(NetConfig(channels=6), 4)
    with torch.no_grad():
        w = model.conv2.weight
        w.mul_((torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) < 0.5).float())
    return model


@pytest.fixture(scope="module")
def converted(pruned_model):
    x = images(96, seed=4)
    aware = convert(pruned_model, x, T=3, method="error-aware")
    rebuilt = convert(pruned_model, x, T=3, method="reconstruct")
    return pruned_model, x, aware, rebuilt


def _error(net, model, x):
    with torch.no_grad():
        return float((net.run(x).logits - model(x)).pow(2).mean())


@pytest.mark.parametrize("cfg", [NetConfig(), NetConfig(concat=True, pool="max"), NetConfig(residual=False)])
def test_blocks_cut_where_one_population_carries_everything_later_layers_read(cfg):
    graph = convert(make_net(cfg), images(8), T=2).graph
    cut = blocks(graph)
    assert [p.name for b in cut for p in b] == [p.name for p in graph.populations[1:]]
    seen = {"input"}
    for block in cut:
        names = {p.name for p in block}
        later = graph.populations[graph.populations.index(block[-1]) + 1 :]
        read_later = {s for p in later for s in _sources(p)}
        assert not (read_later & ((names | seen) - {block[-1].name})), [p.name for p in block]
        seen |= names


def test_resnet20_is_cut_into_its_stem_residual_blocks_and_classifier():
    graph = convert(build_model("resnet20").eval(), torch.rand(2, 3, 32, 32), T=2).graph
    assert [len(b) for b in blocks(graph)] == [1] + [2] * 9 + [1]


def test_the_output_error_falls_below_error_aware_on_held_out_images(converted):
    model, x, aware, rebuilt = converted
    held_out = images(96, seed=9)
    assert _error(rebuilt, model, x) < 0.8 * _error(aware, model, x)
    assert _error(rebuilt, model, held_out) < _error(aware, model, held_out)
    assert rebuilt.calibration["method"] == "reconstruct + bias correction"
    assert rebuilt.calibration["weights"] == "reconstructed"
    layers = rebuilt.calibration["layers"]
    assert all(r["method"] == "reconstruct" for r in layers.values())
    assert all(layers[p.name]["lam"] is not None for p in rebuilt.graph.neurons)
    assert {"block_loss", "network_loss"} <= set(layers[rebuilt.graph.output.name])


def test_weights_change_but_not_the_synapses_or_the_counts(converted):
    _, _, aware, rebuilt = converted
    before, after = list(aware.graph.tensors()), list(rebuilt.graph.tensors())
    assert len(before) == len(after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a == 0, b == 0)  # no synapse added or removed
    assert rebuilt.ann_macs == aware.ann_macs
    for name, f in aware.fanouts.items():
        assert torch.equal(rebuilt.fanouts[name], f), name


def test_the_reconstructed_network_is_exact_and_survives_a_checkpoint(converted, tmp_path):
    _, x, _, rebuilt = converted
    net = rebuilt.to(torch.float64)
    xd = x[:8].double()
    fast = net.run(xd, keep_durations=True)
    assert_identical(fast, net.run(xd, "stepped", keep_durations=True))
    net.save(tmp_path / "rebuilt")
    again = load(tmp_path / "rebuilt")
    assert torch.equal(again.run(xd).logits, fast.logits)
    assert again.calibration["weights"] == "reconstructed"


def test_a_latency_target_is_met_with_windows_chosen_before_the_reconstruction(pruned_model):
    x = images(64, seed=2)
    net = convert(pruned_model, x, T="latency:12", method="reconstruct")
    assert net.timesteps == 12
    assert "allocation" in net.calibration and net.calibration["weights"] == "reconstructed"


def test_evaluation_names_the_rebuilt_ann_and_counts_the_raw_engine_as_tsc(converted):
    from converter.cli.common import table
    from converter.evaluate import evaluate

    _, x, _, rebuilt = converted
    pixels, labels = (x[:16] * 255).round().to(torch.uint8), torch.zeros(16, dtype=torch.long)
    report = evaluate(rebuilt, pixels, labels, engines=("ann", "raw"), precision="float32")
    assert report["weights"] == "reconstructed" and "tsc" in report
    assert table(report).splitlines()[1].startswith("ANN (rebuilt)")


def test_new_weights_must_sit_on_the_same_synapses(converted):
    _, _, aware, _ = converted
    same = aware.with_weights(aware.graph.to(), aware.lams, aware.corrections, aware.calibration)
    assert same.fanouts is aware.fanouts  # counted once, shared
    filled = aware.graph.map_ops(lambda op: replace(op, **{k: v + 1 for k, v in op.tensors().items()}))
    with pytest.raises(ValueError, match="same synapses"):
        aware.with_weights(filled, aware.lams, aware.corrections, aware.calibration)
