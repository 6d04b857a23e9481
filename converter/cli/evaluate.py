"""``python -m converter evaluate`` (one checkpoint) and ``sweep`` (one ANN, several T and calibrations)."""

from __future__ import annotations

import argparse
import time
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
    method_list,
    needs_holdout,
    rate_key,
    table,
    test_subset,
    window_list,
)
from converter.conversion.pipeline import convert
from converter.evaluate import evaluate
from converter.snn.checkpoint import CheckpointError
from converter.snn.engines import ENGINES
from converter.snn.network import load


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``evaluate``."""
    p = subparsers.add_parser("evaluate", help="ANN vs TSC vs rate coding: accuracy and operations per image")
    p.add_argument("checkpoint", type=Path)
    add_data_args(p)
    p.add_argument("--engine", choices=[n for n, e in ENGINES.items() if e.spikes], default="fast")
    add_report_args(p)
    p.add_argument(
        "--record",
        action="store_true",
        help="write what was measured into the checkpoint's manifest as its accuracy (the checkpoint is "
        "written again: the same tensors, the manifest sealed anew)",
    )
    p.set_defaults(func=run_evaluate)
    return p


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``evaluate``."""
    try:
        net = load(args.checkpoint)
    except CheckpointError as e:
        raise CommandError(str(e)) from None
    spec = net.input_spec
    images, labels = test_subset(args, spec.height)
    if tuple(images.shape[1:]) != (spec.channels, spec.height, spec.width):
        raise CommandError(
            f"test images are {tuple(images.shape[1:])}, the network takes "
            f"{(spec.channels, spec.height, spec.width)}"
        )
    report = {"checkpoint": str(args.checkpoint), "model": net.name}
    report.update(
        evaluate(
            net,
            images,
            labels,
            engines=("ann", args.engine),
            rate_steps=tuple(args.rate_steps),
            rate_images=args.rate_images,
            rate_v0=tuple(args.rate_v0),
            batch_size=args.batch_size,
            precision=args.precision,
        )
    )
    if args.record:
        net.accuracy = accuracy_record(net, report, args.data)
        net.save(args.checkpoint)
    emit(args, report, table(report) + (f"\nrecorded in {args.checkpoint}" if args.record else ""))
    return 0


def add_sweep_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``sweep``."""
    p = subparsers.add_parser("sweep", help="evaluate one ANN converted at several T and calibrations")
    add_source_args(p)
    add_data_args(p)
    p.add_argument(
        "--T",
        type=window_list,
        default=[4, 8, 16, 32, 64],
        help="windows, e.g. 4,8,16,32,64; 'auto' adds the allocation search (per-layer windows, --max-drop); "
        "'latency:N' per-layer windows with a latency of exactly N steps",
    )
    p.add_argument(
        "--methods",
        type=method_list,
        default=[("percentile", 99.99)],
        help="calibrations, e.g. max,percentile:99.9,percentile:99.99,search,error-aware",
    )
    p.add_argument("--per-channel", action="store_true")
    add_conversion_args(p)
    add_report_args(p)
    p.set_defaults(func=run_sweep)
    return p


def run_sweep(args: argparse.Namespace) -> int:
    """Run ``sweep``: ANN once, TSC per (calibration, T), rate coding once."""
    train = load_split(args, "train")
    src = load_source(args, train)
    calib, holdout = calibration_sets(args, train, any(map(needs_holdout, args.T)))
    images, labels = test_subset(args)
    report: dict = {"model": src.name, "dataset": args.data, "test_images": int(labels.numel()), "runs": []}
    lines = []
    for method, pct in args.methods:
        net = None
        for T in args.T:
            if net is None or isinstance(T, str) or method in ("search", "error-aware"):  # T-dependent
                net = convert(
                    src.model,
                    calib,
                    T=T,
                    method=method,
                    percentile=pct,
                    per_channel=args.per_channel,
                    bias_correction=not args.no_bias_correction,
                    holdout=holdout,
                    max_drop=args.max_drop,
                    max_T=args.max_T,
                )
            if isinstance(T, int):
                net = net.with_timesteps(T)
            first = not report["runs"]
            started = time.time()
            r = evaluate(
                net,
                images,
                labels,
                engines=("ann", "fast") if first else ("fast",),
                rate_steps=tuple(args.rate_steps) if first else (),
                rate_images=args.rate_images,
                rate_v0=tuple(args.rate_v0),
                batch_size=args.batch_size,
                precision=args.precision,
            )
            if first:
                report["ann"], report["rate"] = r.pop("ann"), r.pop("rate", [])
            r["seconds"] = round(time.time() - started, 1)
            if "allocation" in net.calibration:
                r["allocation"] = {
                    k: v for k, v in net.calibration["allocation"].items() if k != "evaluations"
                }
            report["runs"].append(r)
            label = f"T={T}" if isinstance(T, int) else f"{T} (windows {min(net.windows.values())}-{net.T})"
            lines.append(
                f"{net.calibration['method']:<34} {label:<22} steps={r['tsc']['timesteps']:<6} "
                f"acc={100 * r['tsc']['accuracy']:6.2f}%  additions={r['tsc']['synaptic_additions']:,.0f}"
            )
    head = (
        f"ANN accuracy {100 * report['ann']['accuracy']:.2f}% on {report['test_images']} images, "
        f"{report['ann']['ann_macs']:,} MACs/image"
    )
    rate = [
        f"rate T_rate={rate_key(r):<12} acc={100 * r['accuracy']:6.2f}% on {r['images']} images  "
        f"additions={r['synaptic_additions']:,.0f}"
        for r in report["rate"]
    ]
    emit(args, report, "\n".join([head, *lines, *rate]))
    return 0
