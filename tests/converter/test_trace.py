"""Tracing: every supported spelling converts to the same network; anything else is refused by name."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.thirdparty import LambdaLayer as Fn
from converter import ConversionError, convert


def _assert_ann_is_the_model(model: nn.Module, x: torch.Tensor, **tolerance: float) -> None:
    """Converted at T = 8, the network's ANN computes what ``model`` computes on ``x``."""
    net = convert(model, x, T=8)
    torch.testing.assert_close(net.run(x, "ann").logits, model(x), **tolerance)


class Spellings(nn.Module):
    """ReLU, flatten and residual add in their many spellings; dropout; inplace ops; mean pooling."""

    def __init__(self, variant: int):
        super().__init__()
        self.variant = variant
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        v = self.variant
        y = self.bn(self.conv(x))
        if v % 5 == 0:
            y = self.relu(y)
        elif v % 5 == 1:
            y = F.relu(y)
        elif v % 5 == 2:
            y = torch.relu(y)
        elif v % 5 == 3:
            y = y.relu()
        else:
            y = F.relu(y, inplace=True)
        z = self.conv2(y)
        z = z + y if v % 3 == 0 else torch.add(z, y) if v % 3 == 1 else z.add(y)
        z = F.relu(z)
        z = F.max_pool2d(z, 2)
        z = self.drop(z)
        if v % 5 == 0:
            flat = torch.flatten(z, 1)
        elif v % 5 == 1:
            flat = z.view(z.size(0), -1)
        elif v % 5 == 2:
            flat = z.reshape(z.shape[0], -1)
        elif v % 5 == 3:
            flat = self.flatten(z)
        else:
            flat = z.flatten(1)
        return self.fc(flat)


def test_all_spellings_give_identical_networks():
    torch.manual_seed(0)
    base = Spellings(0).eval()
    x = torch.rand(8, 3, 8, 8)
    reference = convert(base, x, T=8).run(x).logits
    for v in range(1, 6):
        m = Spellings(v).eval()
        m.load_state_dict(base.state_dict())
        net = convert(m, x, T=8)
        assert [p.kind for p in net.graph.populations] == ["input", "neuron", "neuron", "switch", "output"]
        torch.testing.assert_close(net.run(x).logits, reference)


def test_ann_engine_reproduces_the_model():
    torch.manual_seed(0)
    m = Spellings(2).eval()
    x = torch.rand(8, 3, 8, 8)
    net = convert(m, x, T=8)
    torch.testing.assert_close(net.run(x, "ann").logits, m(x), rtol=1e-5, atol=1e-5)


class Bad(nn.Module):
    def __init__(self, act: nn.Module):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3), act)
        self.fc = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        return self.fc(self.block(x).flatten(1))


@pytest.mark.parametrize(
    ("act", "words"),
    [
        (nn.Sigmoid(), ["block.1", "Sigmoid"]),
        (nn.LayerNorm([4, 6, 6]), ["block.1", "LayerNorm"]),
        (nn.GELU(), ["block.1", "GELU"]),
    ],
)
def test_unsupported_modules_are_named(act, words):
    with pytest.raises(ConversionError) as e:
        convert(Bad(act).eval(), torch.rand(2, 3, 8, 8))
    for w in words:
        assert w in str(e.value)


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.fc((y * torch.sigmoid(y)).flatten(1))


def test_unsupported_functions_are_named():
    with pytest.raises(ConversionError, match="sigmoid"):
        convert(Gated().eval(), torch.rand(2, 3, 8, 8))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow cannot be traced
            x = x * 2
        return self.fc(x.flatten(1))


def test_untraceable_model_gets_a_clear_error():
    with pytest.raises(ConversionError, match=r"torch\.fx could not trace Branchy"):
        convert(Branchy(), torch.rand(2, 3, 8, 8))


def test_bad_calibration_input():
    with pytest.raises(ValueError, match="non-empty"):
        convert(Branchy(), torch.rand(0, 3, 8, 8))


class MaxBeforeRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(F.relu(F.max_pool2d(self.conv(x), 2)).flatten(1))


def test_max_pool_before_relu_becomes_neurons_then_switch():
    torch.manual_seed(0)
    m = MaxBeforeRelu().eval()
    x = torch.rand(4, 3, 8, 8)
    net = convert(m, x, T=16)
    assert [p.kind for p in net.graph.populations] == ["input", "neuron", "switch", "output"]
    torch.testing.assert_close(net.run(x, "ann").logits, m(x), rtol=1e-5, atol=1e-5)


class BNReLU(nn.BatchNorm2d):
    """A BatchNorm that applies an activation in its own forward (as fused BN+act modules do)."""

    def forward(self, x):
        return F.relu(super().forward(x))


class PlainReLU(nn.ReLU):
    """A ReLU subclass that keeps ReLU's forward."""


def test_subclass_that_overrides_forward_is_refused_not_converted_as_its_base():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), BNReLU(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    with pytest.raises(ConversionError, match=r"BNReLU subclasses BatchNorm2d but overrides forward"):
        convert(model, torch.rand(2, 3, 8, 8))


def test_subclass_that_keeps_forward_converts_like_its_base():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), PlainReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    x = torch.rand(4, 3, 8, 8)
    net = convert(model, x, T=8)
    assert [p.name for p in net.graph.neurons] == ["_1"]
    torch.testing.assert_close(net.run(x, "ann").logits, model(x))


def test_untraceable_model_error_names_the_code_location():
    with pytest.raises(ConversionError, match=r"test_trace\.py:\d+ \(in forward\): if x\.sum\(\) > 0"):
        convert(Branchy(), torch.rand(2, 3, 8, 8))


class Doubler(nn.Module):
    """A module whose rule (registered below, on purpose wrongly) says it is the identity."""

    def forward(self, x):
        return 2 * x


def test_self_check_refuses_a_rule_that_computes_something_else():
    from converter.conversion.trace.rules import MODULE_RULES, register_module

    register_module(Doubler)(lambda b, node, m: b.tensor(node))
    try:
        model = nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.ReLU(),
            Doubler(),
            nn.Conv2d(4, 4, 3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64, 2),
        )
        with pytest.raises(ConversionError, match=r"self-check failed: layer '_4' \(from 4\)"):
            convert(model.eval(), torch.rand(4, 3, 8, 8))
    finally:
        del MODULE_RULES[Doubler]


def test_calibration_pixels_outside_unit_range_are_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\], got values in \[0, 255\]"):
        convert(model, torch.randint(0, 256, (4, 3, 8, 8)).float())


def test_convert_restores_the_models_training_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    model.train()
    convert(model, torch.rand(4, 3, 8, 8), T=4)
    assert model.training and all(m.training for m in model.modules())


class Clipped(nn.Module):
    """conv -> a clipped ReLU spelled ``act`` -> conv -> ReLU -> linear."""

    def __init__(self, act):
        super().__init__()
        self.conv, self.act, self.conv2 = nn.Conv2d(3, 4, 3), act, nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(self.act(self.conv(x) * 4))).flatten(1))


@pytest.mark.parametrize(
    ("act", "clip"),
    [
        (nn.ReLU6(), 6.0),
        (nn.Hardtanh(0.0, 2.0), 2.0),
        (nn.Threshold(0.0, 0.0), None),
        (Fn(F.relu6), 6.0),
        (Fn(lambda x: F.hardtanh(x, 0.0, 2.0)), 2.0),
        (Fn(lambda x: torch.clamp(x, min=0)), None),
        (Fn(lambda x: x.clamp(0, 1.5)), 1.5),
        (Fn(lambda x: x.clip(min=0.0, max=1.5)), 1.5),
        (Fn(lambda x: torch.clamp_min(x, 0)), None),
        (Fn(lambda x: F.threshold(x, 0.0, 0.0)), None),
    ],
)
def test_clipped_relus_convert_with_their_clip(act, clip):
    torch.manual_seed(0)
    model = Clipped(act).eval()
    x = torch.rand(8, 3, 8, 8)
    net = convert(model, x, T=16)
    assert net.graph.neurons[0].clip == clip
    if clip is not None:
        assert float(net.lam(net.graph.neurons[0].name)) <= clip
    torch.testing.assert_close(net.run(x, "ann").logits, model(x))
    assert torch.equal(net.run(x, "fast").synaptic_additions, net.run(x, "stepped").synaptic_additions)


@pytest.mark.parametrize(
    ("act", "words"),
    [
        (Fn(lambda x: x.clamp(max=1.0)), "lower bound None is not a ReLU"),
        (nn.Hardtanh(), "lower bound -1.0 is not a ReLU"),
        (nn.Threshold(0.1, 0.0), "Threshold(0.1, 0.0) is a ReLU only as Threshold(0, 0)"),
    ],
)
def test_clamps_that_are_not_relus_are_refused(act, words):
    with pytest.raises(ConversionError) as e:
        convert(Clipped(act).eval(), torch.rand(4, 3, 8, 8))
    assert words in str(e.value)


class Heads(nn.Module):
    """Global pooling as a sum, a squeeze to features, and a nearest upsampling."""

    def __init__(self, head):
        super().__init__()
        self.conv, self.conv2, self.fc, self.head = (
            nn.Conv2d(3, 4, 3),
            nn.Conv2d(4, 4, 3),
            nn.Linear(4, 3),
            head,
        )

    def forward(self, x):
        y = F.relu(self.conv2(F.relu(self.conv(x))))  # 8x8 -> 4x4
        return self.fc(self.head(y))


@pytest.mark.parametrize(
    "head",
    [
        Fn(lambda y: y.sum((2, 3)) / 16),
        Fn(lambda y: torch.sum(y, dim=(-1, -2), keepdim=True).flatten(1) / 16),
        Fn(lambda y: F.adaptive_avg_pool2d(y, 1).squeeze()),
        Fn(lambda y: F.adaptive_avg_pool2d(y, 1).squeeze(-1).squeeze(-1)),
        Fn(lambda y: F.relu(F.interpolate(y, scale_factor=2, mode="nearest")).mean((2, 3))),
        nn.Sequential(nn.Upsample(size=(8, 12)), nn.ReLU(), Fn(lambda y: y.mean((2, 3)))),
        Fn(
            lambda y: (
                y.unsqueeze(1).squeeze(1).permute(0, 2, 3, 1).permute(0, 3, 1, 2).transpose(2, 3).mean((2, 3))
            )
        ),
    ],
)
def test_more_spellings_convert(head):
    torch.manual_seed(0)
    model = Heads(head).eval()
    x = torch.rand(4, 3, 8, 8)
    _assert_ann_is_the_model(model, x)


def test_reshapes_that_mix_the_batch_are_refused():
    with pytest.raises(ConversionError, match="mixes the batch"):
        convert(
            Heads(Fn(lambda y: y.reshape(-1).reshape(y.shape[0], 4, -1).mean(2))).eval(),
            torch.rand(2, 3, 8, 8),
        )


def test_bilinear_upsampling_is_refused():
    head = Fn(lambda y: F.interpolate(y, scale_factor=2, mode="bilinear").mean((2, 3)))
    with pytest.raises(ConversionError, match="only nearest by integer factors"):
        convert(Heads(head).eval(), torch.rand(2, 3, 8, 8))


class InPlace(nn.Module):
    """In-place methods: on the input (result used: fine) and on a ReLU output (result dropped)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3), nn.Linear(144, 2)

    def forward(self, x):
        x = x.mul_(1.0)
        y = F.relu(self.c1(x))
        y.add_(self.c2(x))
        return self.fc(F.relu(y).flatten(1))


def test_an_in_place_method_whose_result_is_dropped_is_refused():
    with pytest.raises(ConversionError, match=r"in-place add_\(\) changes a tensor"):
        convert(InPlace().eval(), torch.rand(4, 3, 8, 8))


def test_nan_pixels_are_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2)).eval()
    x = torch.rand(4, 3, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        convert(model, x)


def test_frozen_batchnorm_stays_frozen_in_a_training_model():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    model.train()
    model[1].eval()
    convert(model, torch.rand(4, 3, 8, 8), T=4)
    assert model.training and not model[1].training and model[0].training


def test_error_aware_thresholds_respect_the_clip():
    torch.manual_seed(0)
    model = Clipped(nn.ReLU6()).eval()
    with torch.no_grad():
        model.conv.weight.mul_(20)  # activations well above 6
    net = convert(model, torch.rand(8, 3, 8, 8), T=8, method="error-aware")
    assert float(net.lam(net.graph.neurons[0].name).max()) <= 6.0


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_self_check_names_the_first_layer_that_computes_non_finite_values(value: float):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2)
    )
    with torch.no_grad():
        model[2].weight[1, 0, 0, 0] = value
    with pytest.raises(
        ConversionError, match=r"self-check failed: layer '_3' \(from 3\) computes non-finite"
    ):
        convert(model.eval(), torch.rand(4, 3, 8, 8))


class KeywordAdd(nn.Module):
    """``torch.add(a, other=b)``: the second operand given by keyword."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        return self.fc(torch.relu(torch.add(torch.relu(self.a(x)), other=torch.relu(self.b(x)))).flatten(1))


def test_an_add_with_its_operand_by_keyword_converts():
    model, x = KeywordAdd().eval(), torch.rand(4, 3, 8, 8)
    _assert_ann_is_the_model(model, x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "combine",
    [
        lambda k, y: torch.add(k, y, alpha=2),
        lambda k, y: torch.sub(k, y, alpha=2),
        lambda k, y: torch.add(y, k, alpha=-3),
        lambda k, y: torch.sub(y, k, alpha=0.5),
        lambda k, y: torch.sub(k, y),
    ],
)
def test_a_constant_and_an_activation_combine_with_alpha(combine):
    """``alpha`` scales the second operand, whichever of the two is the constant."""
    torch.manual_seed(0)
    model = Heads(Fn(lambda y: combine(torch.full((1, 4, 1, 1), 0.25), y).relu().mean((2, 3)))).eval()
    x = torch.rand(4, 3, 8, 8)
    _assert_ann_is_the_model(model, x)


class TokenMixer(nn.Module):
    """A linear layer over the last dimension, then a BatchNorm over the channels: the sizes match (4 and 4),
    so only the axis tells which one the BatchNorm scales."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.mix, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(64, 4), nn.BatchNorm1d(4)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        y = self.bn(self.mix(torch.relu(self.conv(x)).flatten(2)))
        return self.fc(torch.relu(y).flatten(1))


def test_a_batchnorm_after_a_linear_over_the_last_dimension_scales_the_channels():
    torch.manual_seed(0)
    from tests.converter.nets import randomise_batchnorm

    model, x = randomise_batchnorm(TokenMixer()), torch.rand(4, 3, 8, 8)
    _assert_ann_is_the_model(model, x, rtol=1e-4, atol=1e-5)


class Split(nn.Module):
    """Channel halves by ``chunk`` or ``split`` (ShuffleNetV2's unit), each through its own 1x1 conv."""

    def __init__(self, spell) -> None:
        super().__init__()
        self.spell, self.conv = spell, nn.Conv2d(3, 6, 3, padding=1)
        self.a, self.b, self.fc = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 2, 1), nn.Linear(4 * 64, 3)

    def forward(self, x):
        left, right = self.spell(torch.relu(self.conv(x)))
        return self.fc(torch.relu(torch.cat([self.a(left), self.b(right)], 1)).flatten(1))


@pytest.mark.parametrize(
    "spell",
    [
        lambda y: y.chunk(2, 1),
        lambda y: torch.chunk(y, 2, dim=1),
        lambda y: torch.split(y, 3, 1),
        lambda y: y.split([3, 3], dim=1),
        lambda y: y.split(split_size=3, dim=-3),
    ],
)
def test_channel_chunks_and_splits_convert(spell):
    torch.manual_seed(0)
    model, x = Split(spell).eval(), torch.rand(4, 3, 8, 8)
    _assert_ann_is_the_model(model, x)


@pytest.mark.parametrize(
    "head",
    [
        Fn(lambda y: torch.maximum(-y * -1, torch.tensor(0.0)).mean((2, 3))),
        Fn(lambda y: torch.maximum(torch.zeros(1), y.neg().neg()).mean((2, 3))),
        Fn(lambda y: torch.relu(torch.neg(y) + 1).mean((2, 3))),
        nn.Sequential(nn.ZeroPad2d((1, 0, 2, 1)), nn.ReLU(), Fn(lambda y: y.mean((2, 3)))),
        nn.Sequential(nn.ConstantPad2d(1, 0.0), Fn(lambda y: y.mean((2, 3)))),
        nn.Sequential(nn.Flatten(), nn.Unflatten(1, (4, 4, 4)), Fn(lambda y: y.mean((2, 3)))),
    ],
)
def test_negation_maximum_with_zero_zero_padding_and_unflatten_convert(head):
    torch.manual_seed(0)
    model = Heads(head).eval()
    x = torch.rand(4, 3, 8, 8)
    _assert_ann_is_the_model(model, x)


def test_maximum_with_anything_but_zero_is_refused():
    model = Heads(Fn(lambda y: torch.maximum(y, torch.tensor(0.5)).mean((2, 3)))).eval()
    with pytest.raises(ValueError, match="maximum of an activation with anything but zero"):
        convert(model, torch.rand(2, 3, 8, 8), T=8)


class DeviceAware(nn.Module):
    """Normalisation written as users write it: constants made on the input's device and dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 6 * 6, 2)
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]))

    def forward(self, x):
        mean = torch.tensor([0.4, 0.5, 0.6], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x - mean) / self.std.view(1, -1, 1, 1).to(x.device)
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_constants_made_on_the_inputs_device_and_dtype_convert():
    torch.manual_seed(0)
    model, x = DeviceAware().eval(), torch.rand(4, 3, 8, 8)
    _assert_ann_is_the_model(model, x, rtol=1e-4, atol=1e-5)


class Sigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        y = torch.sigmoid(self.conv(x))  # the line the refusal must name
        return self.fc(y.flatten(1))


def test_a_refusal_names_the_users_file_line_and_code():
    with pytest.raises(ConversionError) as caught:
        convert(Sigmoid().eval(), torch.rand(2, 3, 8, 8), T=4)
    message = str(caught.value)
    assert f"{__file__}:" in message and "y = torch.sigmoid(self.conv(x))" in message
    assert "no TSC equivalent" in message


class Rearranged(nn.Module):
    """A conv, then ``middle`` (pixel shuffles, adaptive max pooling), then a conv and a classifier."""

    def __init__(self, middle: nn.Module, channels: int, size: int) -> None:
        super().__init__()
        self.conv, self.middle = nn.Conv2d(3, 8, 3, padding=1), middle
        self.after = nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = nn.Linear(4 * size * size, 3)

    def forward(self, x):
        y = self.middle(torch.relu(self.conv(x)))
        return self.fc(torch.relu(self.after(y)).flatten(1))


@pytest.mark.parametrize(
    ("middle", "channels", "size"),
    [
        (nn.PixelShuffle(2), 2, 16),
        (nn.PixelUnshuffle(2), 32, 4),
        (Fn(lambda y: F.pixel_unshuffle(F.pixel_shuffle(y, 2)[:, :, 1:-1, 1:-1], 7)), 98, 2),
        (nn.AdaptiveMaxPool2d(2), 8, 2),
        (Fn(lambda y: F.adaptive_max_pool2d(y, (4, 2))), 8, None),
    ],
)
def test_pixel_shuffles_and_adaptive_max_pooling_convert(middle, channels, size):
    torch.manual_seed(0)
    model = Rearranged(middle, channels, size or 1).eval()
    if size is None:
        model.fc = nn.Linear(4 * 4 * 2, 3)
    x = torch.rand(4, 3, 8, 8)
    _assert_ann_is_the_model(model, x, rtol=1e-4, atol=1e-5)


def test_adaptive_max_pooling_to_a_size_that_does_not_divide_is_refused():
    model = Rearranged(nn.AdaptiveMaxPool2d(3), 8, 3).eval()
    with pytest.raises(ConversionError, match="unequal sizes"):
        convert(model, torch.rand(2, 3, 8, 8), T=8)
