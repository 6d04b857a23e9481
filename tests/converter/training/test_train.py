"""Training loop, checkpoints and resume, learning-rate schedule, and the ``train`` command line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from converter.cli import main
from converter.snn.system import available_cores
from converter.training import train as train_module
from converter.training.datasets import ImageDataset, synthetic_dataset
from converter.training.models import Normalize
from converter.training.runs import ResumeError
from converter.training.train import evaluate_accuracy, lr_at, train

SPEC = "synthetic:classes=4,n=48,size=32,test_n=16"


class ScaledReLU(nn.Module):
    """A ReLU with a learnable output scale, standing in for the lead's trainable clip-floor activation."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * self.scale


def tiny_model(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        ScaledReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, classes),
    )


@pytest.fixture(scope="module")
def data():
    shape = (3, 16, 16)
    return synthetic_dataset(256, 4, shape, seed=1), synthetic_dataset(64, 4, shape, seed=1, split="test")


def test_lr_schedule():
    assert lr_at(0, 100, 10, 0.1, "cosine") == pytest.approx(0.01)
    assert lr_at(9, 100, 10, 0.1, "cosine") == pytest.approx(0.1)
    assert lr_at(10, 100, 10, 0.1, "cosine") == pytest.approx(0.1)
    assert lr_at(55, 100, 10, 0.1, "cosine") == pytest.approx(0.05)
    assert lr_at(99, 100, 10, 0.1, "cosine") < 1e-3
    assert lr_at(0, 100, 0, 0.1, "step") == pytest.approx(0.1)
    assert lr_at(60, 100, 0, 0.1, "step") == pytest.approx(0.01)
    assert lr_at(80, 100, 0, 0.1, "step") == pytest.approx(0.001)
    assert lr_at(50, 100, 0, 0.1, "constant") == 0.1
    with pytest.raises(ValueError, match="schedule"):
        lr_at(50, 100, 0, 0.1, "linear")


def test_training_learns_and_trains_every_parameter(data):
    train_set, test_set = data
    model = tiny_model()
    scale_before = model[3].scale.item()
    lines = []
    result = train(model, train_set, test_set, epochs=6, batch_size=32, lr=0.05, log=lines.append)
    assert result["final_test_acc"] >= 0.9
    assert result["best_test_acc"] >= result["final_test_acc"]
    assert len(result["history"]) == 6 and len(lines) == 6
    assert lines[0].startswith("epoch 1/6  lr ") and "img/s" in lines[0]
    assert model[3].scale.item() != scale_before
    assert evaluate_accuracy(model, test_set, batch_size=7) == pytest.approx(result["final_test_acc"])


def test_evaluate_accuracy_restores_mode():
    class Oracle(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.one_hot((x[:, 0, 0, 0] * 255).round().long() % 3, 3).float()

    images = (
        torch.tensor([0, 1, 2, 3, 4, 5], dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 3, 2, 2).contiguous()
    )
    dataset = ImageDataset(images, torch.tensor([0, 1, 2, 0, 0, 0]), ["a", "b", "c"])
    model = Oracle().train()
    assert evaluate_accuracy(model, dataset, batch_size=4) == pytest.approx(4 / 6)
    assert model.training


def test_checkpoints_and_logs(tmp_path, data):
    train_set, test_set = data
    model = tiny_model()
    train(
        model,
        train_set,
        test_set,
        epochs=3,
        batch_size=64,
        eval_every=2,
        out_dir=tmp_path,
        log=lambda _: None,
    )
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["epoch"] == 3 and [h["test_acc"] is None for h in state["history"]] == [True, False, False]
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 3
    tensors = load_file(str(tmp_path / "last.safetensors"))
    assert "model.1.weight" in tensors and "optimizer.momentum_buffer.1.weight" in tensors
    assert "optimizer.momentum_buffer.3.scale" in tensors
    best = load_file(str(tmp_path / "best.safetensors"))
    assert set(best) == set(model.state_dict())
    with safe_open(str(tmp_path / "best.safetensors"), "pt") as f:
        assert int(f.metadata()["epoch"]) == state["best_epoch"]
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_continues_exactly(tmp_path, data):
    train_set, test_set = data
    train_set = train_set.subset(128)
    settings = {"epochs": 3, "batch_size": 32, "lr": 0.05}
    straight = tiny_model()
    reference = train(straight, train_set, test_set, **settings, log=lambda _: None)

    def stop_after_two(line: str) -> None:
        if line.startswith("epoch 2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(), train_set, test_set, **settings, out_dir=tmp_path, log=stop_after_two)
    lines = []
    resumed_model = tiny_model()
    resumed = train(resumed_model, train_set, test_set, **settings, out_dir=tmp_path, log=lines.append)
    assert lines[0].startswith("resuming") and len(lines) == 2
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in reference["history"]]
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed_model.state_dict()[key], value, rtol=0, atol=0)
    with pytest.raises(ResumeError, match="lr"):
        train(tiny_model(), train_set, test_set, epochs=3, batch_size=32, lr=0.1, out_dir=tmp_path)


def test_ema_is_the_average_that_is_tested_and_kept(tmp_path, data):
    train_set, test_set = data
    train_set = train_set.subset(64)
    decay = 0.9
    plain = tiny_model()
    train(plain, train_set, test_set, epochs=1, batch_size=32, lr=0.05, log=lambda _: None)
    # the same run by hand: two steps, then the average of the weights after each
    manual = tiny_model()
    expected: dict[str, torch.Tensor] = {}
    steps = []

    class Recorder(torch.optim.SGD):
        def step(self, closure=None):
            out = super().step(closure)
            steps.append({k: v.detach().clone() for k, v in manual.state_dict().items()})
            return out

    lines = []
    original = torch.optim.SGD
    torch.optim.SGD = Recorder
    try:
        result = train(manual, train_set, test_set, epochs=1, batch_size=32, lr=0.05, ema_decay=decay,
                       out_dir=tmp_path, log=lines.append)  # fmt: skip
    finally:
        torch.optim.SGD = original
    assert len(steps) == 2
    for i, state in enumerate(steps):  # the first update copies
        for k, v in state.items():
            if v.is_floating_point():  # weights and BatchNorm statistics (not its batch counter)
                expected[k] = decay * expected[k] + (1 - decay) * v if i else v.clone()
    final = manual.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(final[key], value)
    # the raw weights after training are those of the run without EMA; the kept ones are the average
    assert not torch.equal(final["1.weight"], plain.state_dict()["1.weight"])
    torch.testing.assert_close(steps[-1]["1.weight"], plain.state_dict()["1.weight"])
    record = result["history"][0]
    assert record["test_acc"] == pytest.approx(evaluate_accuracy(manual, test_set))
    assert "raw_test_acc" in record and "(EMA; raw " in lines[0]
    assert any(k.startswith("ema.") for k in load_file(str(tmp_path / "last.safetensors")))
    assert json.loads((tmp_path / "state.json").read_text())["args"]["ema_decay"] == decay
    with pytest.raises(ValueError, match="ema_decay"):
        train(tiny_model(), train_set, test_set, epochs=1, ema_decay=1.0)


def test_resume_with_ema_continues_exactly(tmp_path, data):
    train_set, test_set = data
    train_set = train_set.subset(128)
    settings = {"epochs": 3, "batch_size": 32, "lr": 0.05, "ema_decay": 0.8}
    straight = tiny_model()
    train(straight, train_set, test_set, **settings, log=lambda _: None)

    def stop_after_two(line: str) -> None:
        if line.startswith("epoch 2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(), train_set, test_set, **settings, out_dir=tmp_path, log=stop_after_two)
    resumed = tiny_model()
    train(resumed, train_set, test_set, **settings, out_dir=tmp_path, log=lambda _: None)
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("native", "amp", "dtype"),
    [(True, True, torch.bfloat16), (True, False, torch.float32), (False, True, torch.float32)],
)
def test_amp_computes_in_bf16_only_where_the_device_has_it(monkeypatch, native, amp, dtype):
    monkeypatch.setattr(train_module, "native_bf16", lambda device: native)
    with train_module._autocast(torch.device("cpu"), amp):
        out = nn.Linear(4, 2)(torch.ones(3, 4))
    assert out.dtype == dtype


@pytest.mark.parametrize(
    ("mkldnn", "avx512_bf16", "amx", "native"),
    [
        (True, True, False, True),
        (True, False, True, True),
        (True, False, False, False),
        (False, True, True, False),
    ],
)
def test_native_bf16_on_cpu_needs_onednn_and_bf16_instructions(monkeypatch, mkldnn, avx512_bf16, amx, native):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: mkldnn)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert train_module.native_bf16(torch.device("cpu")) is native


@pytest.mark.parametrize(("available", "bf16_gpu"), [(True, True), (True, False), (False, False)])
def test_native_bf16_on_cuda_needs_a_gpu_with_bf16_units(monkeypatch, available, bf16_gpu):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16_gpu)
    assert train_module.native_bf16(torch.device("cuda")) is (available and bf16_gpu)


def test_each_epoch_records_its_precision_across_a_resume(monkeypatch, tmp_path, data):
    monkeypatch.setattr(train_module, "native_bf16", lambda device: True)
    train_set, test_set = data
    settings = {"epochs": 2, "batch_size": 64, "out_dir": tmp_path}

    def stop_after_one(line: str) -> None:
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(), train_set.subset(64), test_set, **settings, amp=True, log=stop_after_one)
    result = train(tiny_model(), train_set.subset(64), test_set, **settings, amp=False, log=lambda _: None)
    assert [epoch["bf16"] for epoch in result["history"]] == [True, False]


def test_native_bf16_is_false_on_other_devices():
    assert not train_module.native_bf16(torch.device("meta"))


def test_cpu_threads():
    assert available_cores() >= 1


# ---------------------------------------------------------------- command line


def _train_cli(tmp_path, *extra: str) -> int:
    argv = ["train", "--model", "resnet20", "--data", SPEC, "--epochs", "1", "--batch-size", "16"]
    return main([*argv, "--out", str(tmp_path / "run"), "--no-cache", *extra])


def test_cli_trains_and_writes_model_files(tmp_path, capsys):
    assert _train_cli(tmp_path, "--json", "--limit-train", "32", "--device", "cpu") == 0
    summary = json.loads(capsys.readouterr().out)
    run = tmp_path / "run"
    assert json.loads((run / "model.json").read_text()) == summary
    assert summary["model"] == "resnet20" and summary["num_classes"] == 4 and summary["train_size"] == 32
    assert summary["classes"] == ["class0", "class1", "class2", "class3"] and summary["dataset"] == SPEC
    assert summary["bf16"] is train_module.native_bf16(torch.device("cpu"))
    weights = load_file(str(run / "model.safetensors"))
    assert weights["fc.weight"].shape == (4, 64)
    init = ["--init", str(run / "model.safetensors"), "--num-classes", "4", "--out", str(tmp_path / "b")]
    again = ["train", "--model", "resnet20", "--data", SPEC, "--epochs", "1", "--limit-train", "16"]
    assert main([*again, "--no-amp", *init]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "b" / "model.json").read_text())["bf16"] is False
    assert _train_cli(tmp_path, "--limit-train", "32", "--lr", "0.5") == 2
    assert "other settings (lr)" in capsys.readouterr().err
    assert _train_cli(tmp_path, "--limit-train", "32", "--lr", "0.5", "--restart") == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/no/such/place"], "/no/such/place"),
        (["--model", "resnet99"], "invalid choice: 'resnet99'"),
        (["--epochs", "zero"], "expected int"),
        (["--lr", "0"], "must be > 0"),
        (["--ema", "1"], "must be < 1"),
        (["--data", "synthetic:classes=4,n=8,size=16"], "expects 3x32x32"),
        (["--init", "/no/weights.safetensors"], "/no/weights.safetensors"),
        (["--num-classes", "2"], "too few"),
        (["--device", "tpu"], "unknown device"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    argv = {"--model": "resnet20", "--data": SPEC, "--epochs": "1", "--out": str(tmp_path / "x")}
    argv.update(dict(zip(args[::2], args[1::2], strict=True)))
    assert main(["train", *[x for pair in argv.items() for x in pair], "--no-cache", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_help(capsys):
    assert main(["train", "--help"]) == 0
    assert "--limit-train" in capsys.readouterr().out
    assert main([]) == 2
    assert "required: COMMAND" in capsys.readouterr().err


def test_distillation_loss_blends_labels_and_the_teachers_softened_answers():
    torch.manual_seed(0)
    logits, teacher, labels = torch.randn(8, 4), torch.randn(8, 4), torch.randint(0, 4, (8,))
    distil = train_module.Distillation(nn.Identity(), temperature=4.0, weight=0.9)
    hard = torch.nn.functional.cross_entropy(logits, labels)
    assert train_module.distillation_loss(logits, labels, None, 0.0, distil) == hard
    assert torch.allclose(train_module.distillation_loss(logits, labels, logits, 0.0, distil), 0.1 * hard)
    soft = torch.nn.functional.kl_div(
        torch.log_softmax(logits / 4, 1), torch.softmax(teacher / 4, 1), reduction="batchmean"
    )
    expected = 0.1 * hard + 0.9 * 16 * soft
    assert torch.allclose(train_module.distillation_loss(logits, labels, teacher, 0.0, distil), expected)
    with pytest.raises(ValueError, match="weight in"):
        train_module.Distillation(nn.Identity(), weight=1.5)


def test_distillation_pulls_the_student_towards_the_teacher(data):
    train_set, test_set = data
    teacher = tiny_model()
    train(teacher, train_set, test_set, epochs=2, lr=0.05, warmup_epochs=0, amp=False, log=lambda _: None)
    images = train_set.images[:64].float() / 255

    def disagreement(student):
        with torch.no_grad():
            return (student.eval()(images).argmax(1) != teacher.eval()(images).argmax(1)).float().mean()

    def student(teach):
        torch.manual_seed(1)
        model = nn.Sequential(*list(tiny_model())[:-1], nn.Linear(16, 4))
        options = {"epochs": 2, "lr": 0.05, "warmup_epochs": 0, "amp": False, "log": lambda _: None}
        distil = None if teach is None else train_module.Distillation(teach, weight=1.0)
        train(model, train_set, test_set, distil=distil, **options)
        return model

    assert disagreement(student(teacher)) < disagreement(student(None))
