"""``python -m converter convert``: trained ANN -> calibrated TSC-SNN checkpoint (optionally evaluated)."""

from __future__ import annotations

import argparse
from pathlib import Path

from converter.cli import CommandError
from converter.cli.common import (
    accuracy_record,
    add_conversion_args,
    add_data_args,
    add_report_args,
    add_source_args,
    calibration_sets,
    emit,
    load_source,
    load_split,
    needs_holdout,
    table,
    test_subset,
    window,
)
from converter.conversion.calibrate import METHODS
from converter.conversion.pipeline import convert
from converter.evaluate import evaluate


def add_convert_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``convert``."""
    p = subparsers.add_parser("convert", help="convert a trained ANN into a TSC-SNN checkpoint")
    add_source_args(p)
    add_data_args(p)
    p.add_argument(
        "--T",
        type=window,
        default=16,
        help="steps per window (default 16); trained: the levels of a clip-floor run; auto: per-layer "
        "windows within --max-drop of the ANN; latency:N: per-layer windows with a latency of N steps",
    )
    p.add_argument("--shift", type=float, default=0.5, choices=[0.0, 0.5], help="0.5 rounds to nearest")
    p.add_argument("--method", choices=METHODS, default="percentile", help="threshold calibration")
    p.add_argument("--percentile", type=float, default=99.99)
    p.add_argument("--per-channel", action="store_true", help="one threshold per channel")
    p.add_argument("--name", help="model name in the manifest (default: the output folder's name)")
    p.add_argument("--version", default="1")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory, or a .safetensors file")
    p.add_argument("--no-eval", action="store_true", help="skip measuring accuracy on the test split")
    add_conversion_args(p)
    add_report_args(p)
    p.set_defaults(func=run_convert)
    return p


def run_convert(args: argparse.Namespace) -> int:
    """Run ``convert``."""
    train = load_split(args, "train")
    src = load_source(args, train)
    if train.classes and len(train.classes) != len(src.classes) and not args.factory:
        raise CommandError(f"the data has {len(train.classes)} classes, the model {len(src.classes)}")
    calib, holdout = calibration_sets(args, train, needs_holdout(args.T))
    labels = train.classes if train.classes else src.classes
    provenance = {
        "source_model": src.name,
        "weights": str(args.run or args.weights or args.factory or args.model_file),
        "dataset": args.data,
        "calibration_images": int(calib.shape[0]),
        "training": src.info,
    }
    try:
        net = convert(
            src.model,
            calib,
            T=args.T,
            shift=args.shift,
            method=args.method,
            percentile=args.percentile,
            per_channel=args.per_channel,
            bias_correction=not args.no_bias_correction,
            holdout=holdout,
            max_drop=args.max_drop,
            max_T=args.max_T,
            name=args.name or args.out.stem,
            version=args.version,
            labels=labels,
            provenance=provenance,
        )
    except ValueError as e:
        raise CommandError(str(e)) from None
    report: dict = {"checkpoint": str(args.out)}
    if not args.no_eval:
        images, ys = test_subset(args)
        report.update(
            evaluate(
                net,
                images,
                ys,
                rate_steps=tuple(args.rate_steps),
                rate_images=args.rate_images,
                rate_v0=tuple(args.rate_v0),
                batch_size=args.batch_size,
                precision=args.precision,
            )
        )
        net.accuracy = accuracy_record(net, report, args.data)
    manifest = net.save(args.out)
    report["weights_sha256"] = manifest["weights_sha256"]
    emit(args, report, (table(report) + "\n\n" if "tsc" in report else "") + f"wrote {args.out}")
    return 0
