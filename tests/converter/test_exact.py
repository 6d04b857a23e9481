"""The fast engine in float32 (guarded) gives float64's levels, counts and logits: on random networks, on
networks whose neurons sit exactly on level boundaries, and on the default model with real images. So does
the stepped reference, which simulates in float64 whatever the network's precision."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from benchmarks.thirdparty import SHARED
from converter import convert, load
from converter.snn.engines import exact
from tests.converter.nets import NetConfig, images, make_net
from tests.converter.test_engines import configs

DEFAULT = Path(__file__).resolve().parents[2] / "models" / "resnet20-cifar10"


def _assert_float64s(net, x) -> None:
    """The fast engine on the float32 network answers what it answers in float64, and so does stepped."""
    ours = net.run(x, "fast", keep_durations=True)
    reference = net.to(torch.float64).run(x.double(), "fast", keep_durations=True)
    assert ours.durations.keys() == reference.durations.keys()
    for name, d in reference.durations.items():
        assert torch.equal(ours.durations[name].double(), d), name
    assert torch.equal(ours.logits, reference.logits)
    for a, b in zip(ours.layers, reference.layers, strict=True):
        assert torch.equal(a.spikes, b.spikes) and torch.equal(a.synaptic_additions, b.synaptic_additions), (
            a.name
        )
    stepped = net.run(x[:4], "stepped", keep_durations=True)
    for name, d in stepped.durations.items():
        assert torch.equal(d.double(), reference.durations[name][:4]), name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cfg=configs,
    seed=st.integers(0, 10_000),
    T=st.sampled_from([1, 2, 3, 5, 8, 16]),
    shift=st.sampled_from([0, 0.5]),
    per_channel=st.booleans(),
)
# a channel fed by a dead one is its constant bias, so its lam equals it: every neuron sits on a level
@example(cfg=NetConfig(3, 1, 1, 0, True, True, False, "avg", 6, 5), seed=0, T=1, shift=0, per_channel=True)
def test_exact_equals_float64_on_random_networks(cfg, seed, T, shift, per_channel):
    x = images(6, cfg.size, seed)
    net = convert(make_net(cfg, seed), x, T=T, shift=shift, percentile=99.0, per_channel=per_channel)
    _assert_float64s(net, x)


@pytest.mark.parametrize("bias", [0.7, 1.3, 2.9, 0.123])
def test_neurons_exactly_on_a_level_reach_it(bias):
    """Calibrated to its own constant value, a channel lies exactly on level T: float64 and exact say T."""
    cfg = NetConfig(channels=2, kernel=1, padding=0, batchnorm=False, pool="none")
    model = make_net(cfg, 1)
    with torch.no_grad():
        model.conv1.weight.zero_()
        model.conv1.bias.fill_(bias)
    x = images(3, cfg.size, 1)
    for T in (1, 3, 5, 16):
        net = convert(model, x, T=T, shift=0.0, percentile=99.0)
        run = net.run(x, "fast", keep_durations=True)
        first = next(n for n in run.durations if n != "input")
        assert torch.equal(run.durations[first], torch.full_like(run.durations[first], T)), T
        _assert_float64s(net, x)


def test_a_residual_network_is_guarded_rather_than_computed_in_float64():
    """The layers of a residual network split into exact and small parts; answers are float64's."""
    torch.manual_seed(0)
    cfg = NetConfig(channels=8, kernel=3, padding=1, residual=True, pool="none", size=8)
    x = images(32, cfg.size, 3)
    net = convert(make_net(cfg, 3), x, T=16, method="max")
    plan = exact.plan_of(net)
    split = [name for name, paths in plan.split.items() if paths is not None]
    assert split, "no layer is guarded: everything fell back to float64"
    _assert_float64s(net, x)


def test_the_default_model_answers_float64s_on_real_images():
    archive = SHARED / "datasets" / "cifar10-binary-lossless.tar.gz"
    if not archive.is_file():
        pytest.skip(f"shared lossless CIFAR-10 archive not found at {archive}")
    from converter.training.datasets import open_dataset, to_float

    x = to_float(open_dataset(f"cifar10:{archive}", "test").images[:128])
    net = load(DEFAULT)
    plain = net.run(x, "raw", keep_durations=True)  # unguarded float32: some level lands elsewhere
    reference = net.to(torch.float64).run(x.double(), "fast", keep_durations=True)
    assert any(not torch.equal(plain.durations[k].double(), d) for k, d in reference.durations.items())
    _assert_float64s(net, x)


class Depthwise(torch.nn.Module):
    """A grouped (depthwise) conv beside a cancelling 1x1 conv that makes the channel grids coarse: the
    depthwise conv's hi part is then all zero and its lo part carries everything."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.Conv2d(3, 1, 3, padding=1)
        self.dw = torch.nn.Conv2d(2, 2, 3, padding=1, groups=2)
        self.cc = torch.nn.Conv2d(2, 2, 1, bias=False)
        with torch.no_grad():
            self.cc.weight.copy_(torch.tensor([[1e5, -1e5], [1e5, -1e5]]).view(2, 2, 1, 1))
        self.head = torch.nn.Linear(2 * 8 * 8, 3)

    def forward(self, x):
        a, b = torch.relu(self.a(x)), torch.relu(self.b(x))
        return self.head(torch.relu(self.dw(a) + self.cc(torch.cat([b, b], 1))).flatten(1))


class SumOfTwo(torch.nn.Module):
    """A layer whose only paths are identities: error-aware calibration gives it per-channel corrections."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.head(torch.relu(torch.relu(self.a(x)) + torch.relu(self.b(x))).flatten(1))


@pytest.mark.parametrize(
    ("model", "options"), [(Depthwise, {"T": 16}), (SumOfTwo, {"T": 8, "method": "error-aware"})]
)
def test_grouped_convs_and_identity_only_layers(model, options):
    torch.manual_seed(0)
    x = images(16, 8, 2)
    _assert_float64s(convert(model().eval(), x, **options), x)


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # torch's note on mkldnn.flags
def test_without_onednn_the_engine_computes_in_float64():
    """Elsewhere a conv may run Winograd (NNPACK from batch 16): the guard is not used."""
    cfg = NetConfig(channels=8, kernel=3, padding=1, residual=True, pool="none", size=8)
    x = images(64, cfg.size, 4)
    net = convert(make_net(cfg, 4), x, T=64)
    with torch.backends.mkldnn.flags(enabled=False):
        assert not exact.guarded_here(net.device)
        _assert_float64s(net, x)
