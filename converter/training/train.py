"""Train a model on uint8 image tensors held on the device; resumable, safetensors checkpoints only."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from converter import progress
from converter.snn.system import available_cores
from converter.training.datasets import ImageDataset, random_crop, random_flip, to_float
from converter.training.runs import (
    CHECKPOINT_FORMAT,
    fingerprint,
    resume,
    save_checkpoint,
    save_safetensors,
)

SCHEDULES = ("cosine", "step", "constant")
MEMORY_FORMAT = torch.channels_last  # tensor cores on CUDA, faster oneDNN convolutions on CPU


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, schedule: str) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up, then the schedule."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "cosine":
        return 0.5 * base_lr * (1 + math.cos(math.pi * progress))
    if schedule == "step":
        return base_lr * 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    if schedule == "constant":
        return base_lr
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA, or a CPU with AVX512-BF16 or AMX (oneDNN)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private torch.cpu probes
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def _autocast(device: torch.device, amp: bool) -> torch.autocast:
    """bf16 autocast when ``amp`` and the device computes bf16 natively; a disabled context elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and native_bf16(device))


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module,
    dataset: ImageDataset,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    *,
    amp: bool = False,
) -> float:
    """Top-1 accuracy (0..1) of ``model`` on ``dataset``, in eval mode; the model's mode is restored."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, len(dataset), batch_size):
        images = dataset.images[start : start + batch_size].to(device, non_blocking=True)
        labels = dataset.labels[start : start + batch_size].to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(to_float(images).contiguous(memory_format=MEMORY_FORMAT))
        correct += (logits.argmax(1) == labels).sum()
    model.train(was_training)
    return correct.item() / max(1, len(dataset))


@dataclass(frozen=True)
class Distillation:
    """Knowledge distillation: a trained ``teacher``, the softening ``temperature``, the soft ``weight``."""

    teacher: nn.Module
    temperature: float = 4.0
    weight: float = 0.9

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and 0 <= self.weight <= 1):
            raise ValueError(
                f"need temperature > 0 and weight in [0, 1], got {self.temperature}, {self.weight}"
            )


def distillation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    label_smoothing: float,
    distil: Distillation | None,
) -> torch.Tensor:
    """Cross-entropy with the labels, blended with knowledge distillation when there is a teacher.

    ``(1 - a) * CE(logits, labels) + a * tau^2 * KL(softmax(t / tau) || softmax(s / tau))`` with
    ``a = distil.weight`` and ``tau = distil.temperature`` (Hinton et al., 2015): the ``tau^2`` keeps the
    soft term's gradients on the scale of the hard one's.
    """
    hard = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if teacher_logits is None or distil is None:
        return hard
    tau, weight = distil.temperature, distil.weight
    soft = F.kl_div(
        F.log_softmax(logits.float() / tau, dim=1),
        F.log_softmax(teacher_logits.float() / tau, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - weight) * hard + weight * tau * tau * soft


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding of 4 px for 32 px images, an eighth of the side above) and flip."""
    padding = 4 if images.shape[-1] <= 64 else images.shape[-1] // 8
    return random_flip(random_crop(images, padding, generator), generator)


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ImageDataset,
    *,
    epoch: int,
    batch_size: int,
    lr_for: Callable[[int], float],
    cfg: dict,
    device: torch.device,
    ema: AveragedModel | None,
    distil: Distillation | None = None,
) -> dict:
    """One pass over ``data`` (``ema`` follows every step); returns loss, accuracy, last lr and images/s.

    A ``distil.teacher`` (in eval mode, no gradient) sees the same augmented images as the model.
    """
    model.train()
    steps = max(1, len(data) // batch_size)
    generator = torch.Generator(device=device).manual_seed(cfg["seed"] * 1_000_003 + epoch)
    torch.manual_seed(cfg["seed"] * 1_000_003 + epoch)
    order = torch.randperm(len(data), device=device, generator=generator)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen, lr = 0, 0.0
    start = time.perf_counter()
    for step in progress.steps(range(steps), f"training epoch {epoch}"):
        index = order[step * batch_size : (step + 1) * batch_size]
        images, labels = data.images[index], data.labels[index]
        if cfg["augment"]:
            images = _augment(images, generator)
        inputs = to_float(images).contiguous(memory_format=MEMORY_FORMAT)
        lr = lr_for((epoch - 1) * steps + step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with _autocast(device, cfg["amp"]):
            teacher_logits = None
            if distil is not None:
                with torch.no_grad():
                    teacher_logits = distil.teacher(inputs)
            logits = model(inputs)
            loss = distillation_loss(logits, labels, teacher_logits, cfg["label_smoothing"], distil)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        loss_sum += loss.detach() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
    train_loss, train_acc = loss_sum.item() / seen, correct.item() / seen
    seconds = time.perf_counter() - start
    return {"lr": lr, "train_loss": train_loss, "train_acc": train_acc, "images_per_s": seen / seconds}


def _format(record: dict, epochs: int) -> str:
    """One log line for an epoch."""
    test = "-" if record["test_acc"] is None else f"{100 * record['test_acc']:.2f}%"
    if record.get("raw_test_acc") is not None:
        test += f" (EMA; raw {100 * record['raw_test_acc']:.2f}%)"
    return (
        f"epoch {record['epoch']}/{epochs}  lr {record['lr']:.4f}  loss {record['train_loss']:.4f}  "
        f"train {100 * record['train_acc']:.2f}%  test {test}  {record['seconds']:.1f}s  "
        f"{record['images_per_s']:.0f} img/s"
    )


def train(
    model: nn.Module,
    train_set: ImageDataset,
    test_set: ImageDataset,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    warmup_epochs: int = 1,
    device: str | torch.device = "cpu",
    out_dir: str | Path | None = None,
    log: Callable[[str], object] = print,
    augment: bool = True,
    eval_every: int = 1,
    amp: bool = True,
    seed: int = 0,
    label_smoothing: float = 0.0,
    threads: int | None = None,
    ema_decay: float = 0.0,
    distil: Distillation | None = None,
) -> dict:
    """Train all parameters of ``model`` in place with nesterov SGD; resumes a matching run in ``out_dir``.

    With ``ema_decay`` > 0 an exponential moving average of the weights and BatchNorm statistics,
    ``w_ema <- decay * w_ema + (1 - decay) * w`` after every step, is what is tested, kept as best and
    left in ``model`` at the end. With ``distil`` the loss is ``distillation_loss``: the labels blended
    with a teacher's temperature-softened answers.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if epochs < 1 or batch_size < 1 or eval_every < 1 or len(train_set) == 0:
        raise ValueError("epochs, batch_size, eval_every and the training set size must all be positive")
    if not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    device = torch.device(device)
    if device.type == "cpu":
        torch.set_num_threads(threads or available_cores())
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model.to(device=device, memory_format=MEMORY_FORMAT)
    train_set, test_set = train_set.to(device), test_set.to(device)
    steps = max(1, len(train_set) // batch_size)
    args = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum,
        "weight_decay": weight_decay, "schedule": schedule, "warmup_epochs": warmup_epochs,
        "augment": augment, "seed": seed, "label_smoothing": label_smoothing,
        "train_size": len(train_set), "test_size": len(test_set), "model": fingerprint(model),
    }  # fmt: skip
    if ema_decay:  # absent when off: runs from before EMA existed still resume
        args["ema_decay"] = ema_decay
    if distil is not None:  # likewise absent without a teacher
        args["kd"] = {"temperature": distil.temperature, "weight": distil.weight}
        args["kd"]["teacher"] = fingerprint(distil.teacher)
        distil.teacher.to(device=device, memory_format=MEMORY_FORMAT).eval()
        for param in distil.teacher.parameters():
            param.requires_grad_(False)
    ema = None
    if ema_decay:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
    tested = model if ema is None else ema.module
    bf16 = amp and native_bf16(device)  # what every epoch of this call computes in, recorded with it
    cfg = {
        "seed": seed, "augment": augment, "amp": bf16, "label_smoothing": label_smoothing,
    }  # fmt: skip
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0
    )
    out = Path(out_dir) if out_dir is not None else None
    state = {"epoch": 0, "history": [], "best_test_acc": None, "best_epoch": None, "args": args}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        resumed = resume(out, model, optimizer, args, ema)
        if resumed is not None:
            state = resumed
            log(f"resuming {out} after epoch {state['epoch']}/{epochs}")

    def lr_for(step: int) -> float:
        return lr_at(step, epochs * steps, min(warmup_epochs * steps, epochs * steps), lr, schedule)

    for epoch in range(state["epoch"] + 1, epochs + 1):
        start = time.perf_counter()
        record = {"epoch": epoch, "bf16": bf16}
        record |= _train_epoch(
            model,
            optimizer,
            train_set,
            epoch=epoch,
            batch_size=batch_size,
            lr_for=lr_for,
            cfg=cfg,
            device=device,
            ema=ema,
            distil=distil,
        )
        evaluate = epoch % eval_every == 0 or epoch == epochs
        record["test_acc"] = evaluate_accuracy(tested, test_set, 500, device) if evaluate else None
        if evaluate and ema is not None:
            record["raw_test_acc"] = evaluate_accuracy(model, test_set, 500, device)
        record["seconds"] = time.perf_counter() - start
        state["history"].append(record)
        state["epoch"] = epoch
        if record["test_acc"] is not None and record["test_acc"] > (state["best_test_acc"] or -1.0):
            state["best_test_acc"], state["best_epoch"] = record["test_acc"], epoch
            if out is not None:
                meta = {"format": CHECKPOINT_FORMAT, "epoch": str(epoch), "test_acc": str(record["test_acc"])}
                save_safetensors(tested.state_dict(), out / "best.safetensors", meta)
        if out is not None:
            save_checkpoint(out, model, optimizer, state, ema)
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        log(_format(record, epochs))
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    history = state["history"]
    return {
        "history": history,
        "best_test_acc": state["best_test_acc"],
        "best_epoch": state["best_epoch"],
        "final_test_acc": history[-1]["test_acc"] if history else None,
    }
