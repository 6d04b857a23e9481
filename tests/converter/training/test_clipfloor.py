"""TSC computes exactly the clip-floor quantised ANN (spec section 3): training with it is lossless."""

from __future__ import annotations

import torch

from converter import convert
from converter.snn.quantise import ClipFloor, InputQuant
from converter.training.clipfloor import clip_floor_model
from tests.converter.nets import NetConfig, images, make_net


def test_converted_output_equals_clip_floor_quantised_ann():
    for cfg, per_channel in ((NetConfig(pool="max"), False), (NetConfig(pool="avg", stride=2), True)):
        model = make_net(cfg, 7).double()
        x = images(16, cfg.size, 7).double()
        net = convert(model.float(), x.float(), T=6, per_channel=per_channel).to(torch.float64)
        quantised = clip_floor_model(
            model.double(), T=6, shift=0.5, lams={k: v.double() for k, v in net.lams.items()}
        )
        with torch.no_grad():
            expected = quantised.double()(x)
        torch.testing.assert_close(net.run(x, "fast").logits, expected, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(net.run(x, "stepped").logits, expected, rtol=1e-9, atol=1e-9)


def test_clip_floor_activation_levels_and_gradient():
    act = ClipFloor(T=4, lam=2.0, shift=0.0)
    x = torch.tensor([-1.0, 0.2, 0.5, 1.3, 2.0, 5.0], requires_grad=True)
    y = act(x)
    assert torch.allclose(y, torch.tensor([0.0, 0.0, 0.5, 1.0, 2.0, 2.0]))
    y.sum().backward()
    assert torch.allclose(
        x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    )  # straight through inside (0, lam)
    assert act.lam.grad is not None


def test_lossless_training_gives_equal_argmax():
    """Fine-tune a clip-floor copy briefly; its conversion reproduces its predictions on every image."""
    torch.manual_seed(0)
    cfg = NetConfig(pool="max", channels=4)
    x = images(64, cfg.size, 1)
    y = (x.mean((1, 2, 3)) * 10).long().clamp(0, 4)
    model = clip_floor_model(make_net(cfg, 1), T=4, shift=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    net = convert(model, x, T=4)
    assert all(r["method"] == "trained clip-floor" for r in net.calibration["layers"].values())
    test = images(200, cfg.size, 2)
    with torch.no_grad():
        ann = model(test)
    snn = net.run(test).logits  # float64's logits, whatever the precision
    assert torch.equal(snn.argmax(1), ann.argmax(1))
    torch.testing.assert_close(snn, ann.double(), rtol=1e-4, atol=1e-4)


def test_relu_subclass_is_clip_floored_like_relu():
    """One matcher decides what a ReLU is, for conversion and for clip-floor training alike."""

    class MyReLU(torch.nn.ReLU):
        pass

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), MyReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 2)
    )
    rewritten = clip_floor_model(model.eval(), T=4)
    kinds = [type(m).__name__ for m in rewritten.modules()]
    assert "MyReLU" not in kinds and kinds.count("ClipFloor") == 1


def test_quantisers_decide_levels_in_float32_under_bf16_autocast():
    """bf16 rounding of ``T * x / lam`` would move values across level boundaries the engines place."""
    torch.manual_seed(0)
    x = torch.rand(4096) * 2.5
    for module in (ClipFloor(T=25, lam=1.1744060516357422), InputQuant(T=37)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = module(x.bfloat16())
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, module(x.bfloat16().float()), rtol=0, atol=0)
