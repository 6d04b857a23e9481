"""Arguments and loaders shared by the convert, evaluate and sweep commands."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from converter.cli import CommandError
from converter.conversion.calibrate import METHODS
from converter.conversion.model_file import ModelFileError, load_model
from converter.snn.network import SpikingNetwork
from converter.snn.windows import latency_target
from converter.training.datasets import SPEC_HELP, DatasetError, ImageDataset, open_dataset, to_float
from converter.training.trained import Trained, TrainedModelError, load_trained

PRECISIONS = ("float64", "float32")  # the engines' arithmetic the CLI measures in


def number(
    kind: type, minimum: float, inclusive: bool = True, below: float = math.inf
) -> Callable[[str], int | float]:
    """An argparse type: ``kind`` at least (or above) ``minimum`` and below ``below``, else one-line error."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if value < minimum or (not inclusive and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {minimum}, got {text}")
        if value >= below:
            raise argparse.ArgumentTypeError(f"must be < {below:g}, got {text}")
        return value

    return parse


def int_list(text: str) -> list[int]:
    """``"8,16,32"`` -> ``[8, 16, 32]`` (positive integers)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def window_list(text: str) -> list[int | str]:
    """``"4,8,auto,latency:64"`` -> ``[4, 8, "auto", "latency:64"]``: uniform, allocated, fixed-latency."""
    out: list[int | str] = []
    for item in (v.strip() for v in text.split(",")):
        try:
            target = latency_target(item)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if item in ("auto", "trained") or target:
            out.append(item)
        elif item.isdigit() and int(item) > 0:
            out.append(int(item))
        elif item:
            raise argparse.ArgumentTypeError(
                f"expected positive integers, 'auto', 'trained' or 'latency:N', got {item!r}"
            )
    if not out:
        raise argparse.ArgumentTypeError("expected windows, e.g. 4,8,16 or auto")
    return out


def window(text: str) -> int | str:
    """One window choice: a positive integer, ``auto``, ``trained`` or ``latency:N``."""
    values = window_list(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected one window, got {text!r}")
    return values[0]


def float_list(text: str) -> list[float]:
    """``"0,0.5"`` -> ``[0.0, 0.5]``."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return values


def method_list(text: str) -> list[tuple[str, float]]:
    """``"max,percentile:99.9,search"`` -> ``[("max", 99.99), ("percentile", 99.9), ("search", 99.99)]``."""
    out = []
    for item in text.split(","):
        name, _, pct = item.strip().partition(":")
        if name not in METHODS:
            raise argparse.ArgumentTypeError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        try:
            out.append((name, float(pct) if pct else 99.99))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad percentile in {item!r}") from None
    return out


def add_source_args(p: argparse.ArgumentParser) -> None:
    """Where the trained ANN comes from."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="output folder of `python -m converter train`")
    src.add_argument("--weights", type=Path, help="safetensors state dict of a zoo model (with --model)")
    src.add_argument("--factory", help="MODULE:FUNCTION returning a trained nn.Module (your own model)")
    src.add_argument(
        "--model-file",
        type=Path,
        help="your exported model: TorchScript (torch.jit.save), torch.export archive (.pt2) or ONNX (.onnx)",
    )
    p.add_argument("--model", help="zoo model name for --weights")
    p.add_argument("--num-classes", type=int, help="outputs of the zoo model (default: from the run or 10)")


def add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """Dataset selection."""
    p.add_argument("--data", required=required, help=f"dataset spec: {SPEC_HELP}")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/datasets"), help="decoded-image cache")
    p.add_argument("--limit", type=int, help="evaluate on the first N test images (class-mixed subset)")


def add_conversion_args(p: argparse.ArgumentParser) -> None:
    """Calibration images, error-aware calibration and window-allocation options (convert and sweep)."""
    p.add_argument(
        "--calibration-images", type=number(int, 1), default=512, help="training images used to calibrate"
    )
    p.add_argument(
        "--no-bias-correction", action="store_true", help="error-aware calibration without bias correction"
    )
    p.add_argument(
        "--max-drop",
        type=number(float, 0),
        default=0.1,
        help="T=auto: accuracy budget in points below the ANN",
    )
    p.add_argument("--max-T", type=number(int, 1), default=32, help="T=auto: the largest window tried")
    p.add_argument(
        "--holdout-images",
        type=number(int, 1),
        default=2000,
        help="T=auto and latency:N: training images (none used to calibrate) the windows are judged on",
    )


def needs_holdout(T: int | str) -> bool:
    """Whether windows ``T`` are chosen on held-out images: ``auto`` and ``latency:N``."""
    return T == "auto" or latency_target(T) is not None


def calibration_sets(
    args: argparse.Namespace, train: ImageDataset, holdout: bool
) -> tuple[Tensor, tuple | None]:
    """Calibration pixels and, when ``holdout``, a disjoint held-out set (pixels, labels) from ``train``."""
    if not holdout:
        return to_float(train.subset(args.calibration_images, 0).images), None
    try:
        calib, held = train.disjoint_subsets([args.calibration_images, args.holdout_images], 0)
    except ValueError as e:
        raise CommandError(f"--calibration-images + --holdout-images: {e}") from None
    return to_float(calib.images), (to_float(held.images), held.labels)


def rate_key(run: dict[str, Any]) -> str:
    """A rate run's name: ``T_rate``, with ``@v0=...`` when its neurons did not start at rest."""
    return str(run["timesteps"]) + (f"@v0={run['v0']:g}" if run.get("v0") else "")


def add_report_args(p: argparse.ArgumentParser) -> None:
    """Rate-coded baseline and output options shared by convert, evaluate and sweep."""
    p.add_argument("--rate-steps", type=int_list, default=[], help="rate-coded T_rate, e.g. 64,256,1024")
    p.add_argument(
        "--rate-v0",
        type=float_list,
        default=[0.0],
        help="initial membrane potentials of the rate baseline, e.g. 0,0.5 (0.5: QCFS's theta/2)",
    )
    p.add_argument("--rate-images", type=int, default=200, help="test images for rate coding (class-mixed)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="the engines' arithmetic (the fast and stepped engines give float64's levels in either; "
        "float32, what the service serves by default, is faster; raw, rate and the ANN compute in it as is)",
    )
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--json-out", type=Path, help="also write the JSON report here")


def accuracy_record(net: SpikingNetwork, report: dict, data: str) -> dict:
    """The manifest's ``accuracy``: what ``report`` measured, on which images, engine and precision."""
    return {
        "dataset": data,
        "split": "test",
        "images": int(report["tsc"]["images"]),
        "engine": report["tsc"]["engine"],
        "precision": report["precision"],
        "ann": report["ann"]["accuracy"],
        "tsc": {str(net.T) if net.uniform else "windows": report["tsc"]["accuracy"]},
        "rate": {rate_key(r): r["accuracy"] for r in report.get("rate", [])},
    }


def load_source(args: argparse.Namespace, data: ImageDataset) -> Trained:
    """The trained model the arguments name (a model file is read for ``data``'s image shape)."""
    if args.model_file:
        shape = tuple(data.images.shape[1:])
        try:
            model = load_model(args.model_file, shape)
        except ModelFileError as e:
            raise CommandError(str(e)) from None
        with torch.no_grad():
            outputs = model(torch.zeros(1, *shape)).shape[-1]
        info = {"model_file": str(args.model_file)}
        return Trained(model, args.model_file.stem, [str(i) for i in range(outputs)], None, info)
    if args.factory:
        module, _, fn = args.factory.partition(":")
        try:
            model = getattr(importlib.import_module(module), fn)()
        except (ImportError, AttributeError) as e:
            raise CommandError(f"--factory {args.factory}: {e}") from None
        if not isinstance(model, nn.Module):
            raise CommandError(f"--factory {args.factory} returned {type(model).__name__}, not an nn.Module")
        n = args.num_classes or 10
        return Trained(model.eval(), fn, [str(i) for i in range(n)], None, {"factory": args.factory})
    try:
        return load_trained(args.run or args.weights, args.model, args.num_classes)
    except TrainedModelError as e:
        raise CommandError(str(e)) from None


def load_split(args: argparse.Namespace, split: str, size: int | None = None) -> ImageDataset:
    """One split of ``--data``."""
    try:
        return open_dataset(args.data, split, size=size, cache_dir=args.cache_dir)
    except DatasetError as e:
        raise CommandError(str(e)) from None


def test_subset(args: argparse.Namespace, size: int | None = None) -> tuple[Tensor, Tensor]:
    """Test images and labels, limited by ``--limit`` to a reproducible class-mixed subset."""
    data = load_split(args, "test", size)
    if args.limit:
        data = data.subset(args.limit, 0)
    return data.images, data.labels


def emit(args: argparse.Namespace, report: dict[str, Any], text: str) -> None:
    """Print the human table, or JSON with ``--json``; also write ``--json-out`` when given."""
    if getattr(args, "json_out", None):
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report) if args.json else text, file=sys.stdout)


def table(report: dict[str, Any]) -> str:
    """ANN vs TSC vs rate coding, one line each, then TSC per layer."""
    lines = [f"{'run':<18}{'acc %':>8}{'steps':>8}{'spikes':>12}{'additions':>14}{'MACs':>14}"]
    if "ann" in report:
        a = report["ann"]
        name = "ANN (rebuilt)" if report.get("weights") == "reconstructed" else "ANN"
        lines.append(f"{name:<18}{100 * a['accuracy']:>8.2f}{'-':>8}{'-':>12}{'-':>14}{a['ann_macs']:>14,}")
    if "tsc" in report:
        t = report["tsc"]
        lines.append(
            f"{'TSC T=' + str(report['T']) + ('' if report.get('uniform', True) else ' max'):<18}"
            f"{100 * t['accuracy']:>8.2f}{t['timesteps']:>8}"
            f"{t['spikes']:>12,.0f}{t['synaptic_additions']:>14,.0f}{'-':>14}"
        )
    for r in report.get("rate", []):
        name = f"rate v0={r['v0']:g}" if r.get("v0") else "rate"
        lines.append(
            f"{name + ' (' + str(r['images']) + ' img)':<18}{100 * r['accuracy']:>8.2f}{r['timesteps']:>8}"
            f"{r['spikes']:>12,.0f}{r['synaptic_additions']:>14,.0f}{'-':>14}"
        )
    if "tsc" in report:
        lines.append("")
        lines.append(f"{'TSC layer':<24}{'kind':<8}{'neurons':>10}{'spikes':>12}{'additions':>14}")
        for layer in report["tsc"]["layers"]:
            lines.append(
                f"{layer['name']:<24}{layer['kind']:<8}{layer['neurons']:>10,}{layer['spikes']:>12,.0f}"
                f"{layer['synaptic_additions']:>14,.0f}"
            )
    return "\n".join(lines)
