"""Model zoo: shapes, parameter counts, normalisation, torch.fx traceability with converter-friendly ops."""

from __future__ import annotations

import math
import operator

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from converter.training.models import MODEL_NAMES, Normalize, build_model, input_size
from converter.training.models.resnet import PadShortcut

CLASSES = {"resnet20": 10, "vgg16": 10, "vgg16-imagenet": 1000, "resnet34": 1000}
PARAMS = {"resnet20": 269_722, "vgg16": 14_724_042, "vgg16-imagenet": 138_365_992, "resnet34": 21_797_672}
LEAF_MODULES = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Linear, nn.Dropout)
FUNCTIONS = {operator.add, operator.sub, operator.truediv, operator.getitem, torch.flatten, F.pad}


@pytest.fixture(scope="module")
def zoo() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: build_model(name, CLASSES[name]).eval() for name in MODEL_NAMES}


def test_names_and_input_sizes():
    assert set(MODEL_NAMES) == set(CLASSES)
    assert input_size("resnet20") == input_size("vgg16") == (3, 32, 32)
    assert input_size("resnet34") == input_size("vgg16-imagenet") == (3, 224, 224)
    with pytest.raises(ValueError, match="unknown model 'resnet50'"):
        build_model("resnet50")
    with pytest.raises(ValueError, match="unknown model"):
        input_size("nope")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet20", 0)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_counts(zoo, name):
    assert sum(p.numel() for p in zoo[name].parameters()) == PARAMS[name]


def test_num_classes_sets_the_head():
    model = build_model("resnet20", 7)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_and_fx_trace(zoo, name):
    model = zoo[name]
    x = torch.rand(2 if input_size(name)[1] == 32 else 1, *input_size(name))
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (x.shape[0], CLASSES[name])
        torch.testing.assert_close(traced(x), out)
    modules = dict(model.named_modules())
    for node in traced.graph.nodes:
        if node.op == "call_module":
            assert isinstance(modules[node.target], LEAF_MODULES), node.target
        elif node.op == "call_function":
            assert node.target in FUNCTIONS, node.target
        else:
            assert node.op in ("placeholder", "get_attr", "output"), node.op


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_normalize_first_and_one_relu_module_per_site(zoo, name):
    model = zoo[name]
    assert isinstance(next(iter(model.children())), Normalize)
    traced = torch.fx.symbolic_trace(model)
    calls = [n.target for n in traced.graph.nodes if n.op == "call_module"]
    relu_calls = [t for t in calls if isinstance(model.get_submodule(t), nn.ReLU)]
    relu_names = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    assert sorted(relu_calls) == sorted(relu_names)  # every ReLU module is called, each at one site


def test_resnet20_structure():
    model = build_model("resnet20")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 and all(m.bias is None for m in convs)
    shortcuts = [m for m in model.modules() if isinstance(m, PadShortcut)]
    assert len(shortcuts) == 2 and model.layer2[0].conv1.stride == (2, 2)
    assert model.layer1[0].downsample is None


def test_pad_shortcut_subsamples_and_pads_channels():
    x = torch.arange(2 * 16 * 4 * 4, dtype=torch.float32).view(2, 16, 4, 4)
    out = PadShortcut(32)(x)
    assert out.shape == (2, 32, 2, 2)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_normalize_module():
    norm = Normalize((0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    x = torch.ones(1, 3, 2, 2)
    assert torch.allclose(norm(x)[0, :, 0, 0], torch.tensor([1.0, 3.0, 0.5]))
    assert set(norm.state_dict()) == {"mean", "std"} and norm.mean.shape == (1, 3, 1, 1)
    with pytest.raises(ValueError):
        Normalize((0.5,), (0.0,))
    with pytest.raises(ValueError):
        Normalize((0.5, 0.5), (1.0,))


def test_kaiming_init_scale():
    model = build_model("vgg16")
    conv = model.features[3]  # 64 -> 64 channels, 3x3
    expected = math.sqrt(2 / (64 * 9))
    assert abs(conv.weight.std().item() - expected) / expected < 0.05
    bn = model.features[1]
    assert torch.equal(bn.weight, torch.ones(64)) and torch.equal(bn.bias, torch.zeros(64))


def test_imagenet_models_follow_torchvision_names(zoo):
    names = set(zoo["vgg16-imagenet"].state_dict())
    assert {"features.0.weight", "features.0.bias", "features.1.running_mean", "classifier.6.weight"} <= names
    resnet = set(zoo["resnet34"].state_dict())
    assert {"conv1.weight", "layer2.0.downsample.0.weight", "layer4.2.bn2.bias", "fc.weight"} <= resnet
