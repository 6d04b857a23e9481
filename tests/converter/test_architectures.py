"""Architectures users bring, written small: each converts through the self-check, fast == stepped exactly,
and its synapse counts equal a brute-force count of distinct (source, target) pairs (spec section 6)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from converter import convert
from converter.conversion.trace import Builder, Value, register_module
from converter.conversion.trace.rules import MODULE_RULES
from converter.snn.fold import batchnorm_affine
from tests.converter.nets import randomise_batchnorm
from tests.converter.synapses import assert_exact_counts


def bn_relu(c: int) -> nn.Sequential:
    """BatchNorm then ReLU."""
    return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU())


class PreActResNet(nn.Module):
    """Pre-activation residual blocks (BN-ReLU-conv twice), one with a strided 1x1 shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a1, self.c1, self.a2, self.c2 = (
            bn_relu(4),
            nn.Conv2d(4, 4, 3, padding=1),
            bn_relu(4),
            nn.Conv2d(4, 4, 3, padding=1),
        )
        self.a3, self.c3 = bn_relu(4), nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.a4, self.c4 = bn_relu(6), nn.Conv2d(6, 6, 3, padding=1)
        self.short = nn.Conv2d(4, 6, 1, stride=2)
        self.head, self.fc = bn_relu(6), nn.Linear(6, 3)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.c2(self.a2(self.c1(self.a1(x))))
        pre = self.a3(x)
        x = self.short(pre) + self.c4(self.a4(self.c3(pre)))
        return self.fc(F.adaptive_avg_pool2d(self.head(x), 1).flatten(1))


class InvertedResidual(nn.Module):
    """MobileNetV2: expand 1x1 + ReLU6, depthwise 3x3 + ReLU6, linear 1x1 projection, residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6())
        self.expand = nn.Sequential(nn.Conv2d(4, 12, 1, bias=False), nn.BatchNorm2d(12), nn.ReLU6())
        self.depthwise = nn.Sequential(
            nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False), nn.BatchNorm2d(12)
        )
        self.project = nn.Sequential(nn.Conv2d(12, 4, 1, bias=False), nn.BatchNorm2d(4))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(F.relu6(self.depthwise(self.expand(x))))
        return self.fc(x.mean((2, 3)))


class DenseBlock(nn.Module):
    """DenseNet: two BN-ReLU-conv layers whose outputs are concatenated to their inputs, a transition."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.l1, self.l2 = (
            nn.Sequential(bn_relu(4), nn.Conv2d(4, 2, 3, padding=1)),
            nn.Sequential(bn_relu(6), nn.Conv2d(6, 2, 3, padding=1)),
        )
        self.transition = nn.Sequential(bn_relu(8), nn.Conv2d(8, 4, 1), nn.AvgPool2d(2))
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x, self.l1(x)], 1)
        x = torch.cat((x, self.l2(x)), dim=1)
        return self.fc(F.relu(self.transition(x)).flatten(1))


class Fire(nn.Module):
    """SqueezeNet fire module: squeeze 1x1, then 1x1 and 3x3 expansions concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(3, 3, 1)
        self.e1, self.e3 = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 3, padding=1)
        self.classifier = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        s = F.relu(self.squeeze(x))
        x = torch.cat([F.relu(self.e1(s)), F.relu(self.e3(s))], 1)
        return F.adaptive_avg_pool2d(F.relu(self.classifier(x)), 1).flatten(1)


class FirePooled(Fire):
    """SqueezeNet between fire modules: the concatenation max-pooled, then a conv (no ReLU between)."""

    def forward(self, x):
        s = F.relu(self.squeeze(x))
        x = F.max_pool2d(torch.cat([F.relu(self.e1(s)), F.relu(self.e3(s))], 1), 3, 2, ceil_mode=True)
        return F.adaptive_avg_pool2d(F.relu(self.classifier(x)), 1).flatten(1)


class Inception(nn.Module):
    """GoogLeNet's inception block: 1x1, 3x3 and pooled branches concatenated, the concatenation max-pooled
    into the next block's convs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.b1, self.b3 = (
            nn.Conv2d(4, 2, 1),
            nn.Sequential(nn.Conv2d(4, 2, 1), nn.ReLU(), nn.Conv2d(2, 3, 3, 1, 1)),
        )
        self.pool_proj = nn.Conv2d(4, 2, 1)
        self.after = nn.Conv2d(7, 4, 1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        x = F.relu(self.stem(x))
        pooled = F.relu(self.pool_proj(F.max_pool2d(x, 3, 1, 1)))
        x = torch.cat([F.relu(self.b1(x)), F.relu(self.b3(x)), pooled], 1)
        x = F.relu(self.after(F.max_pool2d(x, 2)))
        return self.fc(x.flatten(1))


class ShuffleUnitChunk(nn.Module):
    """ShuffleNetV2 unit as torchvision writes it: chunk in halves, transform one, concatenate, shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.ReLU())
        self.fc = nn.Linear(6 * 8 * 8, 3)

    def forward(self, x):
        left, right = self.stem(x).chunk(2, dim=1)
        return self.fc(F.channel_shuffle(torch.cat([left, self.branch(right)], 1), 2).flatten(1))


class SubPixel(nn.Module):
    """ESPCN-style upsampling: a conv to r^2 times the channels, PixelShuffle(r), a conv; then adaptive max
    pooling back down."""

    def __init__(self) -> None:
        super().__init__()
        self.expand, self.shuffle = nn.Conv2d(3, 8, 3, padding=1), nn.PixelShuffle(2)
        self.conv, self.pool = nn.Conv2d(2, 4, 3, padding=1), nn.AdaptiveMaxPool2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        y = F.relu(self.conv(self.shuffle(F.relu(self.expand(x)))))
        return self.fc(self.pool(y).flatten(1))


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: split the channels, transform one half, concatenate, shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.branch = nn.Sequential(
            nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.ReLU(),
            nn.Conv2d(3, 3, 3, padding=1, groups=3), nn.BatchNorm2d(3),
            nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.ReLU(),
        )  # fmt: skip
        self.shuffle = nn.ChannelShuffle(2)
        self.fc = nn.Linear(6 * 8 * 8, 3)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x[:, :3], self.branch(x[:, 3:])], 1)
        return self.fc(self.shuffle(x).flatten(1))


class ShuffleUnitView(ShuffleUnit):
    """The same unit with torchvision's spelling of the shuffle: view, transpose, view."""

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x[:, :3], self.branch(x[:, 3:])], 1)
        n, c, h, w = x.size()
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.fc(x.flatten(1))


class BNReLU(nn.BatchNorm2d):
    """An activation-fused BatchNorm (as timm's BatchNormAct2d): refused until a rule is registered."""

    def forward(self, x):
        return F.relu(super().forward(x))


class FusedBN(nn.Module):
    """conv, activation-fused BatchNorm, conv, activation-fused BatchNorm, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.n1, self.c2, self.n2 = nn.Conv2d(3, 4, 3), BNReLU(4), nn.Conv2d(4, 4, 3), BNReLU(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(self.n2(self.c2(self.n1(self.c1(x)))).flatten(1))


def bnrelu_rule(b: Builder, node: fx.Node, m: BNReLU) -> Value:
    """What a user registers for BNReLU: the BatchNorm folded, then a neuron layer."""
    return b.neuron(node, b.channel_affine(node, b.tensor(node), batchnorm_affine(m)))


@pytest.fixture
def fused_bn_rule():
    """BNReLU's rule, registered for the test only."""
    register_module(BNReLU)(bnrelu_rule)
    yield
    del MODULE_RULES[BNReLU]


class GlobalContext(nn.Module):
    """A pooled branch of shape (C, 1, 1) added back to the (C, H, W) map (squeeze-and-add, GCNet-like)."""

    def __init__(self, pooled_first: bool = False, same_population: bool = False) -> None:
        super().__init__()
        self.pooled_first, self.same_population = pooled_first, same_population
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.context = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8 * 8 * 8, 5)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        b = a if self.same_population else torch.relu(self.c2(a))
        pooled = self.context(F.adaptive_avg_pool2d(a, 1))
        x = pooled + b if self.pooled_first else b + pooled
        return self.fc(torch.relu(x).flatten(1))


class GlobalContextPooledFirst(GlobalContext):
    def __init__(self) -> None:
        super().__init__(pooled_first=True)


class GlobalContextOnePopulation(GlobalContext):
    def __init__(self) -> None:
        super().__init__(same_population=True)


ARCHITECTURES = {
    "global-context": GlobalContext,
    "global-context-pooled-first": GlobalContextPooledFirst,
    "global-context-one-population": GlobalContextOnePopulation,
    "preact-resnet": PreActResNet,
    "densenet-block": DenseBlock,
    "squeezenet-fire": Fire,
    "squeezenet-fire-pooled": FirePooled,
    "inception-block": Inception,
    "shufflenet-unit-chunk": ShuffleUnitChunk,
    "sub-pixel-upsampling": SubPixel,
    "shufflenet-unit": ShuffleUnit,
    "shufflenet-unit-view": ShuffleUnitView,
    "fused-bn-subclass": FusedBN,
    "mobilenetv2-block": InvertedResidual,
}


def converted(name: str):
    """The architecture with random weights and BatchNorm statistics, its conversion, and test images."""
    torch.manual_seed(0)
    model = randomise_batchnorm(ARCHITECTURES[name]())
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return model, convert(model, x, T=8), x  # the self-check has compared every layer with the model


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_architecture_converts_exactly(name, fused_bn_rule):
    model, net, x = converted(name)
    torch.testing.assert_close(net.run(x, "ann").logits, model(x), rtol=1e-4, atol=1e-5)
    net = net.to(torch.float64)
    fast, stepped = net.run(x, "fast", keep_durations=True), net.run(x, "stepped", keep_durations=True)
    for layer in fast.durations:
        assert torch.equal(fast.durations[layer], stepped.durations[layer]), layer
    assert torch.equal(fast.synaptic_additions, stepped.synaptic_additions)
    assert torch.equal(fast.spikes, stepped.spikes)
    torch.testing.assert_close(fast.logits, stepped.logits, rtol=1e-9, atol=1e-9)
    assert_exact_counts(net)


def test_activation_fused_batchnorm_is_refused_without_its_rule():
    from converter.conversion.trace import ConversionError

    with pytest.raises(ConversionError, match="BNReLU subclasses BatchNorm2d but overrides forward"):
        convert(randomise_batchnorm(FusedBN()), torch.rand(2, 3, 8, 8))


def test_both_shuffle_spellings_convert_to_the_same_network():
    (_, a, x), (_, b, _) = converted("shufflenet-unit"), converted("shufflenet-unit-view")
    assert torch.equal(a.run(x).logits, b.run(x).logits)
    assert torch.equal(a.run(x).synaptic_additions, b.run(x).synaptic_additions)


def test_a_broadcast_branch_reaches_every_position():
    """Each neuron of the pooled map feeds all 8 channels at all 8 x 8 positions through the context branch
    (it used to count 8, one per channel), on top of its 3 x 3 x 8 fan-out into the second conv."""
    _, net, _ = converted("global-context")
    first = net.graph.neurons[0].name
    fanout = net.fanouts[first].view(8, 8, 8)
    assert fanout.min() >= 8 * 8 * 8 + 2 * 2 * 8  # a corner neuron: 512 broadcast targets, 4 x 8 conv ones
    assert fanout[:, 1:-1, 1:-1].min() == 8 * 8 * 8 + 3 * 3 * 8  # no synapse is counted twice
