"""SpikingJelly's ann2snn reference: every ReLU converted, accuracy read out over time, additions counted."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from benchmarks import spikingjelly as sj
from benchmarks.results.catalogue import MEASUREMENTS
from benchmarks.results.page import render
from converter.training.models import build_model
from tests.benchmarks.test_results import _report as sweep_report


class Residual(nn.Module):
    """A BatchNorm'd conv, a functional ReLU, a residual add and a module ReLU used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        a = F.relu(self.bn1(self.conv1(x - 0.5)))
        b = self.relu(self.conv2(a) + a)
        return self.fc(F.adaptive_avg_pool2d(self.relu(b), 1).flatten(1))


class Dense(nn.Module):
    """One hidden conv layer, fully connected to the output: every hidden neuron drives exactly 5 synapses."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


def _data(model: nn.Module, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Calibration images, test images and the ANN's own answers as labels."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2 * n, 3, size, size, generator=g)
    with torch.no_grad():
        labels = model.eval()(images[n:]).argmax(1)
    return images[:n], images[n:], labels


def test_every_relu_becomes_its_own_module_and_the_function_stays():
    torch.manual_seed(0)
    model = Residual().eval()
    gm = sj.modular_relus(model)
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
    relus = [
        n for n in gm.graph.nodes if n.op == "call_module" and type(gm.get_submodule(n.target)) is nn.ReLU
    ]
    assert len(relus) == 3 and len({n.target for n in relus}) == 3
    assert not [n for n in gm.graph.nodes if n.op == "call_function" and n.target in sj.FUNCTIONAL_RELUS]


def test_measure_reads_accuracy_over_time_and_counts_additions():
    torch.manual_seed(0)
    model = Residual()
    calibration, images, labels = _data(model, 16, 8)
    report = sj.measure(model, calibration, images, labels, ["max", "99.9%", 0.5], [2, 4, 8], batch_size=8)
    assert report["ann"]["accuracy"] == 1.0 and report["spiking_layers"] == 3
    runs = report["runs"]
    assert [(r["mode"], r["timesteps"]) for r in runs] == [
        (m, t) for m in ("max", "99.9%", "0.5") for t in (2, 4, 8)
    ]
    for mode in ("max", "99.9%", "0.5"):
        rows = [r for r in runs if r["mode"] == mode]
        assert all(0 <= r["accuracy"] <= 1 and r["ci95"][0] <= r["accuracy"] <= r["ci95"][1] for r in rows)
        additions = [r["synaptic_additions"] for r in rows]
        assert 0 < additions[0] < additions[-1] and additions == sorted(additions)
        assert all(r["spikes"] > 0 and r["images"] == 16 for r in rows)
    lines = sj.table(report).splitlines()
    assert len(lines) == 4 + len(runs) and all(line.count("|") == 7 for line in lines[2:])


def test_each_spike_adds_its_neurons_fanout():
    torch.manual_seed(1)
    model = Dense()
    calibration, images, labels = _data(model, 8, 6)
    report = sj.measure(model, calibration, images, labels, ["max"], [1, 8], batch_size=8)
    for r in report["runs"]:
        assert r["synaptic_additions"] == pytest.approx(5 * r["spikes"])
    assert report["runs"][-1]["spikes"] > 0


def test_wilson_interval():
    assert sj.wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert sj.wilson(0, 10)[0] == 0.0 and sj.wilson(10, 10)[1] == 1.0


def test_command_line_writes_the_json(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "run" / "best.safetensors"
    weights.parent.mkdir()
    save_file(build_model("resnet20").state_dict(), str(weights))
    out = tmp_path / "sj.json"
    argv = ["spikingjelly", "--data", "synthetic:classes=10,n=64,size=32", "--weights", str(weights)]
    argv += ["--images", "8", "--calibration", "8", "--modes", "99.9%", "--max-steps", "8", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    sj.main()
    report = json.loads(out.read_text())
    assert report["network"] == "run" and report["spiking_layers"] == 19
    assert [r["timesteps"] for r in report["runs"]] == [4, 8]
    assert "| 99.9% | 8 |" in capsys.readouterr().out
    # a later run of another mode keeps the rows it did not measure again
    monkeypatch.setattr(sys, "argv", [*argv[:-5], "max", *argv[-4:]])
    sj.main()
    assert [r["mode"] for r in json.loads(out.read_text())["runs"]] == ["99.9%", "99.9%", "max", "max"]


def test_the_report_lists_it_beside_the_rate_baselines(tmp_path):
    (tmp_path / "results").mkdir()
    stem = MEASUREMENTS[0].stem
    (tmp_path / "results" / f"{stem}.json").write_text(json.dumps(sweep_report()))
    runs = [
        {"mode": "99.9%", "timesteps": t, "accuracy": a, "synaptic_additions": 1e6 * t, "images": 8}
        for t, a in ((4, 0.25), (8, 0.5))
    ]
    (tmp_path / "results" / f"spikingjelly-{stem}.json").write_text(json.dumps({"runs": runs}))
    text = render(tmp_path).read_text()
    levers = text[text.index("## Latency levers") : text.index("## Per model")]
    assert f"| `{stem}` | SpikingJelly ann2snn, 99.9% (8 images) | - | 8 | 50.00 | - | 8,000,000 |" in levers
