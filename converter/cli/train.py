"""``python -m converter train``: train a zoo model on a dataset; resumable; writes model.safetensors/json."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from converter.cli import CommandError
from converter.cli.common import number
from converter.training.clipfloor import CLIP_PREFIX, clip_floor_init, clip_floor_model
from converter.training.datasets import SPEC_HELP, DatasetError, ImageDataset, open_dataset, to_float
from converter.training.models import MODEL_NAMES, build_model, input_size
from converter.training.runs import ResumeError, save_safetensors
from converter.training.train import SCHEDULES, Distillation, train
from converter.training.trained import TrainedModelError, load_trained

RUN_FILES = ("state.json", "last.safetensors", "best.safetensors", "log.jsonl")


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand."""
    p = subparsers.add_parser("train", help="train a zoo model", description=__doc__)
    p.add_argument("--model", required=True, choices=MODEL_NAMES, help="zoo model name")
    p.add_argument("--data", required=True, help=f"dataset spec: {SPEC_HELP}")
    p.add_argument("--test-data", help="spec of the test set (default: the test split of --data)")
    p.add_argument(
        "--out", required=True, type=Path, help="run folder (resumed when it holds a matching run)"
    )
    p.add_argument("--epochs", required=True, type=number(int, 1))
    p.add_argument("--batch-size", type=number(int, 1), default=128)
    p.add_argument("--lr", type=number(float, 0, inclusive=False), default=0.1)
    p.add_argument("--momentum", type=number(float, 0), default=0.9)
    p.add_argument("--wd", type=number(float, 0), default=5e-4, help="weight decay")
    p.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    p.add_argument("--warmup-epochs", type=number(int, 0), default=1)
    p.add_argument("--label-smoothing", type=number(float, 0), default=0.0)
    p.add_argument(
        "--ema",
        type=number(float, 0, below=1),
        default=0.0,
        help="decay of an exponential moving average of the weights, e.g. 0.999: tested and kept (0: off)",
    )
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument(
        "--no-amp",
        action="store_true",
        help="train in fp32 (default: bf16 autocast on CUDA and CPUs with AVX512-BF16 or AMX)",
    )
    p.add_argument("--eval-every", type=number(int, 1), default=1, help="test every N epochs (and the last)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")
    p.add_argument("--threads", type=number(int, 1), help="CPU threads (default: the CPUs available)")
    p.add_argument(
        "--num-classes", type=number(int, 1), help="model outputs (default: the dataset's classes)"
    )
    p.add_argument(
        "--clip-floor",
        type=number(int, 1),
        metavar="T",
        help="lossless option: train with TSC's clip-floor activation for this T (spec section 9)",
    )
    p.add_argument(
        "--clip-floor-input",
        type=number(int, 1),
        metavar="T_IN",
        help="with --clip-floor: levels of the input pixels, the input layer's window (default: T)",
    )
    p.add_argument(
        "--init",
        type=Path,
        help="start from these weights (.safetensors state dict); with --clip-floor they may be a clip-floor "
        "run's, whose trained clipping levels are kept (lowering T step by step: 16, 8, 4, 3)",
    )
    p.add_argument(
        "--teacher",
        type=Path,
        help="distil from this trained model (a run folder, or weights of --model): the loss blends the "
        "labels with its temperature-softened answers",
    )
    p.add_argument("--kd-temperature", type=number(float, 0, inclusive=False), default=4.0, metavar="TAU")
    p.add_argument(
        "--kd-weight",
        type=number(float, 0, below=1.000001),
        default=0.9,
        help="share of the distillation term in the loss, 0..1 (with --teacher)",
    )
    p.add_argument("--limit-train", type=number(int, 1), help="use a random subset of N training images")
    p.add_argument("--limit-test", type=number(int, 1), help="use a random subset of N test images")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/datasets"), help="decoded-image cache")
    p.add_argument("--no-cache", action="store_true", help="do not cache decoded ImageFolder images")
    p.add_argument("--workers", type=number(int, 1), help="image-decoding processes (default: the CPUs)")
    p.add_argument("--no-verify", action="store_true", help="skip the md5 check of official CIFAR archives")
    p.add_argument("--restart", action="store_true", help="discard a run already in --out")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON (logs go to stderr)")
    p.set_defaults(func=run_train)
    return p


def torch_device(name: str) -> torch.device:
    """The torch device named on the command line, checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CommandError(f"unknown device {name!r}; expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"device {name!r} asked for, but this torch sees no CUDA GPU")
    return device


def load_data(args: argparse.Namespace) -> tuple[ImageDataset, ImageDataset]:
    """The training and test sets the arguments name, limited and checked against the model's input."""
    _, height, width = input_size(args.model)
    options = {
        "size": height,
        "cache_dir": None if args.no_cache else args.cache_dir,
        "workers": args.workers,
        "verify": not args.no_verify,
    }
    try:
        train_set = open_dataset(args.data, "train", **options)
        test_set = open_dataset(args.test_data or args.data, "test", **options)
    except DatasetError as exc:
        raise CommandError(str(exc)) from None
    if args.limit_train:
        train_set = train_set.subset(args.limit_train, args.seed)
    if args.limit_test:
        test_set = test_set.subset(args.limit_test, args.seed)
    for name, data in (("training", train_set), ("test", test_set)):
        if data.shape[1:] != (3, height, width):
            raise CommandError(
                f"{name} images are {data.shape[1]}x{data.shape[2]}x{data.shape[3]} but {args.model} "
                f"expects 3x{height}x{width}"
            )
    if train_set.classes != test_set.classes:
        raise CommandError(
            f"training and test sets name different classes: {train_set.classes} vs {test_set.classes}"
        )
    return train_set, test_set


def make_model(args: argparse.Namespace) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The model to train: ``args.model`` with ``args.num_classes`` outputs, ``--init`` weights if given.

    Also the clipping levels ``--init`` carries when it is a clip-floor run's weights, by ReLU node name.
    """
    model = build_model(args.model, args.num_classes)
    lams: dict[str, torch.Tensor] = {}
    if args.init is not None:
        try:
            state = load_file(str(args.init))
        except (OSError, SafetensorError) as exc:
            raise CommandError(f"{args.init}: cannot read weights ({exc})") from None
        if any(k.startswith("model.") for k in state):
            state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        lams = {
            k.removeprefix(CLIP_PREFIX).removesuffix(".lam"): v
            for k, v in state.items()
            if k.startswith(CLIP_PREFIX) and k.endswith(".lam")
        }
        state = {k: v for k, v in state.items() if not k.startswith((CLIP_PREFIX, "tsc_input_quant"))}
        if lams and not args.clip_floor:
            raise CommandError(f"{args.init}: clip-floor weights; continue them with --clip-floor T")
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise CommandError(
                f"{args.init}: weights do not fit {args.model}: {' '.join(str(exc).split())[:400]}"
            ) from None
    return model, lams


def run_train(args: argparse.Namespace) -> int:
    """Run the ``train`` command."""
    device = torch_device(args.device)
    train_set, test_set = load_data(args)
    labels_needed = int(max(train_set.labels.max(), test_set.labels.max())) + 1
    args.num_classes = args.num_classes or len(train_set.classes)
    if args.num_classes < labels_needed:
        raise CommandError(
            f"--num-classes {args.num_classes} is too few: the data has labels up to {labels_needed - 1}"
        )
    model, lams = make_model(args)
    if args.clip_floor_input and not args.clip_floor:
        raise CommandError("--clip-floor-input needs --clip-floor")
    if args.clip_floor and lams:  # a clip-floor run continued at another T: its trained levels carry over
        model = clip_floor_model(model, args.clip_floor, lams=lams, input_T=args.clip_floor_input)
    elif args.clip_floor:
        images = to_float(train_set.images[:512])
        model = clip_floor_init(model, images, args.clip_floor, input_T=args.clip_floor_input)
    distil = None
    if args.teacher is not None:
        try:
            teacher = load_trained(args.teacher, args.model, args.num_classes).model
        except TrainedModelError as exc:
            raise CommandError(f"--teacher: {exc}") from None
        distil = Distillation(teacher, args.kd_temperature, args.kd_weight)
    stream = sys.stderr if args.json else sys.stdout
    if args.restart:
        for name in RUN_FILES:
            (args.out / name).unlink(missing_ok=True)
    try:
        result = train(
            model,
            train_set,
            test_set,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            momentum=args.momentum,
            weight_decay=args.wd,
            schedule=args.schedule,
            warmup_epochs=args.warmup_epochs,
            device=device,
            out_dir=args.out,
            log=lambda line: print(line, file=stream, flush=True),
            augment=not args.no_augment,
            eval_every=args.eval_every,
            amp=not args.no_amp,
            seed=args.seed,
            label_smoothing=args.label_smoothing,
            threads=args.threads,
            ema_decay=args.ema,
            distil=distil,
        )
    except (ResumeError, OSError) as exc:
        raise CommandError(str(exc)) from None
    summary = _summary(args, train_set, test_set, result)
    save_safetensors(model.state_dict(), args.out / "model.safetensors", {"model": args.model})
    (args.out / "model.json").write_text(json.dumps(summary, indent=1) + "\n")
    if args.json:
        print(json.dumps(summary))
    else:
        best = summary["best_test_acc"]
        print(f"wrote {args.out / 'model.safetensors'}; best test accuracy {100 * (best or 0):.2f}%")
    return 0


def _summary(args: argparse.Namespace, train_set: ImageDataset, test_set: ImageDataset, result: dict) -> dict:
    """What ``model.json`` records about the run."""
    return {
        "model": args.model,
        "num_classes": args.num_classes,
        "classes": train_set.classes,
        "input_size": list(input_size(args.model)),
        "dataset": args.data,
        "test_dataset": args.test_data or args.data,
        "train_size": len(train_set),
        "test_size": len(test_set),
        "epochs": args.epochs,
        "init": str(args.init) if args.init else None,
        "teacher": {"path": str(args.teacher), "temperature": args.kd_temperature, "weight": args.kd_weight}
        if args.teacher
        else None,
        "ema_decay": args.ema,
        "bf16": all(epoch.get("bf16", False) for epoch in result["history"]),  # every epoch, resumed ones too
        "clip_floor": {
            "T": args.clip_floor,
            "shift": 0.5,
            "input_T": args.clip_floor_input or args.clip_floor,
        }
        if args.clip_floor
        else None,
        "final_test_acc": result["final_test_acc"],
        "best_test_acc": result["best_test_acc"],
        "best_epoch": result["best_epoch"],
        "weights": "model.safetensors",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
