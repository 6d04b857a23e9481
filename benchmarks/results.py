"""Measure the paper's tables on our models and render ``docs/results.md`` with its plots.

    python -m benchmarks.results --data cifar10:PATH                               # missing sweeps, render
    python -m benchmarks.results --data cifar10:PATH --only thirdparty-resnet20    # one sweep (again), render
    python -m benchmarks.results --render-only                                     # JSON -> markdown + PNG

``PATH`` is the original CIFAR-10 (``../shared/datasets/cifar10-binary-lossless.tar.gz``).

Training runs are read from ``$TSC_RUNS`` (default ``~/.cache/tsc-snn/runs``, the Makefile's ``RUNS``).

Each measurement is a ``python -m converter sweep`` (or ``evaluate``) whose JSON lands in
``docs/results/``; the markdown and plots are generated from those files only, never typed by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

DOCS = Path("docs")
RESULTS = DOCS / "results"
JPEG = RESULTS / "jpeg"  # earlier measurements on the lossy JPEG copy, kept for reference
RUNS = Path(os.environ.get("TSC_RUNS", "~/.cache/tsc-snn/runs")).expanduser()  # training runs (Makefile RUNS)
RATE = ["--rate-steps", "32,64,128,256", "--rate-images", "300", "--rate-v0", "0,0.5"]
THIRD_PARTY = ["--factory", "tests.converter.thirdparty:load_resnet20"]

# spec section 9: the paper's numbers (ECCV 2020, CIFAR-10) for the tables
PAPER = {
    "resnet20": {"ann": 91.47, "tsc": "69.38 at 64 steps, 91.42 at 512", "rate": "RMP-SNN 91.36 at >= 512"},
    "vgg16": {"ann": 93.63, "tsc": "92.79 at 64 steps, 93.63 at 512", "rate": "RMP-SNN 93.63 at >= 512"},
}

# what is measured on the original CIFAR-10: (file stem, title, paper key, sweep arguments after --data)
MEASUREMENTS: list[tuple[str, str, str, list[str]]] = [
    (
        "thirdparty-resnet20",
        "Third-party ResNet-20 (trained elsewhere on the original CIFAR-10), converted unmodified",
        "resnet20",
        [*THIRD_PARTY, "--T", "4,8,12,16,32", "--methods", "percentile:99.99", *RATE],
    ),
    (
        "thirdparty-resnet20-error-aware",
        "Third-party ResNet-20, error-aware calibration and window allocation (budget 1 point)",
        "resnet20",
        [*THIRD_PARTY, "--T", "4,8,12,16,auto", "--methods", "error-aware", "--max-drop", "1.0"],
    ),
    (
        "thirdparty-resnet20-auto-0.1",
        "Third-party ResNet-20, window allocation with a budget of 0.1 point",
        "resnet20",
        [*THIRD_PARTY, "--T", "auto", "--methods", "error-aware", "--max-drop", "0.1"],
    ),
    (
        "thirdparty-resnet20-cf4",
        "Third-party ResNet-20 after low-T training here: clip-floor T=4 (input 8), learnable thresholds, "
        "2 epochs",
        "resnet20",
        ["--run", str(RUNS / "thirdparty-cf4-in8"), "--T", "trained", "--methods", "max"],
    ),
    (
        "resnet20",
        "ResNet-20 trained here from scratch (20 epochs, cosine, label smoothing 0.1)",
        "resnet20",
        ["--run", str(RUNS / "resnet20"), "--T", "8,16,32", "--methods", "percentile:99.99"],
    ),
    (
        "resnet20-cf4",
        "ResNet-20 trained here, low-T trained: clip-floor T=4 (input 8), 2 epochs (the default model)",
        "resnet20",
        ["--run", str(RUNS / "resnet20-cf4-in8"), "--T", "trained", "--methods", "max"],
    ),
]
# earlier, on the JPEG copy (about 10 points below the original for the same model): stem and title
JPEG_MEASUREMENTS: list[tuple[str, str, str]] = [
    ("resnet20", "ResNet-20 trained here on the JPEG copy (55 epochs)", "resnet20"),
    ("resnet20-cf8", "the same, clip-floor fine-tuned for T=8", "resnet20"),
    ("resnet20-cf16", "the same, clip-floor fine-tuned for T=16", "resnet20"),
    ("vgg16", "VGG-16 trained here on the JPEG copy (GPU, 105 of 108 epochs)", "vgg16"),
    ("vgg16-rate200", "VGG-16 again, rate-coded on 200 images", "vgg16"),
    ("thirdparty-resnet20", "Third-party ResNet-20 on the JPEG copy", "resnet20"),
]
RASTER_CHECKPOINT = Path("models/resnet20-cifar10")


def measure(data: str, remeasure: bool, only: list[str] | None = None) -> None:
    """Run the sweeps whose JSON is missing (all: ``remeasure``; named: ``only``) and the spike raster."""
    from converter.cli import main

    RESULTS.mkdir(parents=True, exist_ok=True)
    for stem, _, _, argv in MEASUREMENTS:
        out = RESULTS / f"{stem}.json"
        source = Path(argv[1])
        wanted = stem in only if only else remeasure or not out.exists()
        if not wanted or (argv[0] == "--run" and not source.exists()):
            continue
        print(f"measuring {stem} ...", file=sys.stderr)
        code = main(["sweep", *argv, "--data", data, "--json-out", str(out)])
        if code:
            raise SystemExit(f"sweep for {stem} failed with status {code}")
    raster = RESULTS / "raster.json"
    if RASTER_CHECKPOINT.exists() and (remeasure or not raster.exists()):
        raster.write_text(json.dumps(spike_raster(RASTER_CHECKPOINT, data)))


def spike_raster(checkpoint: Path, data: str, neurons_per_layer: int = 64) -> dict[str, Any]:
    """On/off spike times of a sample of neurons per layer for one test image, from the stepped engine.

    The image is the first test image the model classifies correctly.
    """
    from converter import load
    from converter.training.datasets import open_dataset, to_float

    net = load(checkpoint)
    test = open_dataset(data, "test", cache_dir=".cache/datasets")
    first = to_float(test.images[:64])
    right = (net.run(first, "fast").logits.argmax(1) == test.labels[:64]).nonzero()
    index = int(right[0]) if len(right) else 0
    image = first[index : index + 1]
    res = net.run(image, "stepped", keep_durations=True)
    g = torch.Generator().manual_seed(0)
    layers = []
    for p in net.graph.populations:
        if p.kind not in ("input", "neuron"):
            continue
        d = res.durations[p.name][0].flatten()
        pick = torch.randperm(d.numel(), generator=g)[:neurons_per_layer]
        end = net.schedule.end(p.name)
        layers.append(
            {
                "name": p.name,
                "window": p.window,
                "start": net.schedule.start[p.name],
                "on": [end - int(v) if v > 0 else None for v in d[pick]],
                "off": end,
            }
        )
    return {
        "model": net.name,
        "T": net.T,
        "timesteps": net.timesteps,
        "label": test.classes[int(test.labels[index])],
        "predicted": net.labels[int(res.logits.argmax())],
        "layers": layers,
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _num(x: float) -> str:
    return f"{x:,.0f}"


def _windows(run: dict[str, Any]) -> str:
    """``16`` for uniform windows, ``auto: 3-12 (input 8)`` for allocated ones."""
    w = run.get("windows") or {"input": run["T"]}
    values = set(w.values())
    if len(values) == 1:
        return str(values.pop())
    kind = "auto" if "allocation" in run else "mixed"
    return f"{kind}: {min(values)}-{max(values)} (input {w['input']})"


def _model_section(stem: str, title: str, paper_key: str, report: dict[str, Any]) -> list[str]:
    ann = report["ann"]
    runs = report["runs"]
    paper = PAPER[paper_key]
    lines = [
        f"### {title}",
        "",
        f"`{stem}` — {report['test_images']} test images; ANN accuracy **{_pct(ann['accuracy'])}%** "
        f"(paper: {paper['ann']}%); {_num(ann['ann_macs'])} MACs per image.",
        "",
        "| calibration | windows T_l | total timesteps | accuracy % | spikes / image | additions / image "
        "| memory accesses / image | neuron updates / image |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        t = r["tsc"]
        lines.append(
            f"| {r['calibration']} | {_windows(r)} | {t['timesteps']} | {_pct(t['accuracy'])} | "
            f"{_num(t['spikes'])} | {_num(t['synaptic_additions'])} | {_num(t['memory_accesses'])} | "
            f"{_num(t['neuron_updates'])} |"
        )
    lines += [
        "",
        f"Paper, TSC-SNN: {paper['tsc']}; best rate-coded in the paper's table: {paper['rate']}.",
        "",
    ]
    if report.get("rate"):
        n = report["rate"][0]["images"]
        lines += [
            f"Rate-coded IF baseline (spec section 8) on a fixed class-mixed subset of {n} test images "
            f"(ANN on the same subset: {_pct(ann.get('accuracy_on_rate_subset'))}%):",
            "",
            "| T_rate | initial potential v0 | accuracy % | spikes / image | additions / image "
            "| neuron updates / image |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {r['timesteps']} | {r.get('v0', 0):g} | {_pct(r['accuracy'])} | {_num(r['spikes'])} | "
            f"{_num(r['synaptic_additions'])} | {_num(r['neuron_updates'])} |"
            for r in report["rate"]
        ]
        lines += ["", *_claims(report), ""]
    return lines


def _equal_accuracy(report: dict[str, Any]) -> list[tuple[dict, dict | None]]:
    """Each TSC run measured on the rate images with the shortest rate run at least as accurate there."""
    rate = sorted(report.get("rate", []), key=lambda r: r["timesteps"])
    return [
        (r, next((q for q in rate if q["accuracy"] >= r["tsc"]["accuracy_on_rate_subset"]), None))
        for r in report["runs"]
        if "accuracy_on_rate_subset" in r["tsc"]
    ]


def _span(values: list[float], digits: int) -> str:
    return "-" if not values else f"{min(values):.{digits}f}-{max(values):.{digits}f}x"


def _summary(reports: dict[str, dict[str, Any]]) -> list[str]:
    """One line per model: how close TSC gets to its ANN, and the paper's two ratios at equal accuracy."""
    lines = [
        "## Summary",
        "",
        "| model | ANN % | shortest TSC run within 0.5 points of the ANN | rate images "
        "| rate/TSC additions at equal accuracy | rate/TSC timesteps at equal accuracy |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for stem, report in reports.items():
        ann = report["ann"]["accuracy"]
        close = min(
            (r for r in report["runs"] if r["tsc"]["accuracy"] >= ann - 0.005),
            key=lambda r: r["tsc"]["timesteps"],
            default=None,
        )
        tsc = (
            f"{close['calibration']}, T = {_windows(close)}: {close['tsc']['timesteps']} steps, "
            f"{_pct(close['tsc']['accuracy'])}%"
            if close
            else "none"
        )
        pairs = [(r, q) for r, q in _equal_accuracy(report) if q is not None]
        adds = [q["synaptic_additions"] / r["tsc"]["synaptic_additions"] for r, q in pairs]
        steps = [q["timesteps"] / r["tsc"]["timesteps"] for r, q in pairs]
        images = report["rate"][0]["images"] if report.get("rate") else "-"
        lines.append(f"| `{stem}` | {_pct(ann)} | {tsc} | {images} | {_span(adds, 1)} | {_span(steps, 2)} |")
    lines += [
        "",
        "The paper reports 30-60x fewer additions and 7-14.5x fewer timesteps than rate coding. Our rate "
        "baseline shares TSC's thresholds, resets by subtraction and gates max pooling by rate, so it nears "
        "the ANN in few steps (tables below), while TSC's latency grows as L·T (spec section 3).",
        "",
    ]
    return lines


def _claims(report: dict[str, Any]) -> list[str]:
    """The paper's two claims on our numbers, compared on the rate-coded subset (like for like)."""
    rate = sorted(report["rate"], key=lambda r: r["timesteps"])
    best = max(rate, key=lambda r: (r["accuracy"], -r["timesteps"]))
    n = best["images"]
    matches = _equal_accuracy(report)
    lines = [
        f"Best rate-coded run: {_pct(best['accuracy'])}% at T_rate = {best['timesteps']}, "
        f"v0 = {best.get('v0', 0):g} "
        f"({_num(best['synaptic_additions'])} additions per image), on {n} images.",
        "",
    ]
    # one image is the resolution of an accuracy on n images: "as good as" allows one image less
    c = min(
        (r for r, _ in matches if r["tsc"]["accuracy_on_rate_subset"] >= best["accuracy"] - 1.001 / n),
        key=lambda r: r["tsc"]["timesteps"],
        default=None,
    )
    if c:
        lines.append(
            f"The paper's comparison: the smallest TSC run within one image of it on the same images is "
            f"{c['calibration']}, T = {_windows(c)} ({c['tsc']['timesteps']} steps, "
            f"{_pct(c['tsc']['accuracy_on_rate_subset'])}% there, {_pct(c['tsc']['accuracy'])}% on all): "
            f"rate/TSC timesteps **{best['timesteps'] / c['tsc']['timesteps']:.1f}x**, rate/TSC additions "
            f"and memory accesses **{best['synaptic_additions'] / c['tsc']['synaptic_additions']:.1f}x** "
            "(paper: 7-14.5x fewer timesteps, 30-60x fewer additions)."
        )
    else:
        lines.append("No TSC run in this sweep comes within one image of the best rate-coded run.")
    lines += [
        "",
        "At equal accuracy, run by run: for each TSC run, the shortest rate-coded run at least as accurate "
        "on the same images (ratios > 1: TSC needs fewer).",
        "",
        "| TSC run | steps | accuracy there % | rate T_rate | rate accuracy % | rate/TSC timesteps "
        "| rate/TSC additions |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r, match in matches:
        acc = r["tsc"]["accuracy_on_rate_subset"]
        head = f"| {r['calibration']}, T = {_windows(r)} | {r['tsc']['timesteps']} | {_pct(acc)} "
        if match is None:
            lines.append(head + f"| none up to {rate[-1]['timesteps']} | - | - | - |")
            continue
        lines.append(
            head + f"| {match['timesteps']} | {_pct(match['accuracy'])} "
            f"| {match['timesteps'] / r['tsc']['timesteps']:.2f}x "
            f"| {match['synaptic_additions'] / r['tsc']['synaptic_additions']:.1f}x |"
        )
    lines += [
        "",
        f"With {n} images one image is {100 / n:.1f} points of accuracy: the rate-coded figures are "
        "indicative only.",
    ]
    return lines


def _series(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """TSC runs of a sweep grouped by method: one curve per calibration, allocation runs on their own."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in report["runs"]:
        label = r["calibration"] + (" + window allocation" if "allocation" in r else "")
        out.setdefault(label, []).append(r)
    return out


def _levers(reports: dict[str, dict[str, Any]]) -> list[str]:
    """Section "Latency levers": every TSC run per model, shortest first, with the rate baselines beside."""
    lines = [
        "## Latency levers",
        "",
        "Per model, every TSC configuration measured, shortest first: calibration (percentile, error-aware "
        "with bias correction), per-layer windows (uniform, or chosen by the allocation search within an "
        "accuracy budget on held-out training images), low-T clip-floor training (windows fixed by "
        "training). Beside them, the rate-coded baselines on their own image subset, starting at rest "
        "(v0 = 0) or at half the threshold (v0 = 0.5, QCFS).",
        "",
    ]
    models: dict[str, list[tuple[str, dict[str, Any], dict[str, Any]]]] = {}
    for stem, _, _, _ in MEASUREMENTS:
        if stem in reports:
            base = stem.split("-")[0] if stem.startswith("thirdparty") else "resnet20"
            for r in reports[stem]["runs"]:
                models.setdefault(base, []).append((stem, reports[stem], r))
    for base, rows in models.items():
        lines += [
            f"### {'third-party ResNet-20' if base == 'thirdparty' else 'ResNet-20 trained here'}",
            "",
            "| sweep | method | windows T_l | total timesteps | accuracy % | ANN % | additions / image |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for stem, report, r in sorted(rows, key=lambda x: x[2]["tsc"]["timesteps"]):
            method = r["calibration"] + (" + allocation" if "allocation" in r else "")
            t = r["tsc"]
            lines.append(
                f"| `{stem}` | {method} | {_windows(r)} | {t['timesteps']} | {_pct(t['accuracy'])} "
                f"| {_pct(report['ann']['accuracy'])} | {_num(t['synaptic_additions'])} |"
            )
        searches = [
            f"`{stem}`: budget {r['allocation']['max_drop_points']:g} point(s), "
            f"{r['allocation']['seconds'] / 60:.1f} min on 2 CPU cores, "
            f"{r['allocation']['holdout_images']} held-out training images (ANN "
            f"{_pct(r['allocation']['ann_accuracy'])}% there, TSC {_pct(r['allocation']['accuracy'])}%), "
            f"{'within' if r['allocation']['within_budget'] else 'NOT within'} the budget"
            for stem, _, r in rows
            if "allocation" in r
        ]
        rate = [(stem, q) for stem, report, _ in rows for q in report.get("rate", [])]
        seen = set()
        for stem, q in rate:
            key = (stem, q["timesteps"], q.get("v0", 0))
            if key in seen:
                continue
            seen.add(key)
            lines.append(
                f"| `{stem}` | rate, v0 = {q.get('v0', 0):g} ({q['images']} images) | - | {q['timesteps']} "
                f"| {_pct(q['accuracy'])} | - | {_num(q['synaptic_additions'])} |"
            )
        lines.append("")
        if searches:
            lines += ["Allocation searches (cost measured in the same run):", ""]
            lines += [f"- {line}" for line in searches] + [""]
    return lines


MARKERS = "osD^v<>pXh*"


def _plots(reports: dict[str, dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    colours = plt.get_cmap("tab10").colors
    for name, key, xlabel in (
        ("accuracy_vs_timesteps.png", "timesteps", "total timesteps per inference"),
        ("accuracy_vs_additions.png", "synaptic_additions", "synaptic additions per image"),
    ):
        fig, ax = plt.subplots(figsize=(10, 5))
        i = 0
        for stem, report in reports.items():
            for label, runs in _series(report).items():
                pts = sorted((r["tsc"][key], 100 * r["tsc"]["accuracy"]) for r in runs)
                ax.plot(
                    *zip(*pts, strict=True),
                    marker=MARKERS[i % len(MARKERS)],
                    color=colours[i % 10],
                    label=f"{stem}: TSC {label} ({report['test_images']} img)",
                )
                i += 1
            for v0 in sorted({q.get("v0", 0) for q in report.get("rate", [])}):
                rate = [q for q in report["rate"] if q.get("v0", 0) == v0]
                ax.plot(
                    [q[key] for q in rate],
                    [100 * q["accuracy"] for q in rate],
                    marker=MARKERS[i % len(MARKERS)],
                    color=colours[i % 10],
                    linestyle="--",
                    label=f"{stem}: rate v0={v0:g} ({rate[0]['images']} img)",
                )
                i += 1
        drawn = set()
        for stem, report in reports.items():  # one reference line per distinct ANN
            y = 100 * report["ann"]["accuracy"]
            if y not in drawn:
                drawn.add(y)
                ax.axhline(y, color="gray", lw=0.8, linestyle=":")
                ax.annotate(
                    f"{stem} ANN",
                    (1, y),
                    xycoords=("axes fraction", "data"),
                    ha="right",
                    fontsize=7,
                    color="gray",
                )
        ax.set_xscale("log", base=2)
        ax.set_ylim(max(0, ax.get_ylim()[0]), 100)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy % (original CIFAR-10)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        fig.savefig(RESULTS / name, dpi=120)
        made.append(name)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4.5))
    names, bars = [], {"ANN MACs": [], "TSC additions": [], "rate additions (best)": []}
    for stem, report in reports.items():
        tsc = max(report["runs"], key=lambda r: r["tsc"]["accuracy"])
        best = max(report.get("rate", []), key=lambda r: r["accuracy"], default=None)
        names.append(f"{stem}\nTSC {tsc['tsc']['timesteps']} steps")
        bars["ANN MACs"].append(report["ann"]["ann_macs"])
        bars["TSC additions"].append(tsc["tsc"]["synaptic_additions"])
        bars["rate additions (best)"].append(best["synaptic_additions"] if best else 0)
    width = 0.27
    for k, (label, values) in enumerate(bars.items()):
        ax.bar([j + (k - 1) * width for j in range(len(names))], values, width, label=label, color=colours[k])
    ax.set_xticks(range(len(names)), names, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("operations per image")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(RESULTS / "operations.png", dpi=120)
    made.append("operations.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for k, (stem, report) in enumerate(reports.items()):
        best = max(report["runs"], key=lambda r: r["tsc"]["accuracy"])
        layers = [L for L in best["tsc"]["layers"] if L["kind"] in ("input", "neuron")]
        ax.plot(
            range(len(layers)),
            [L["spikes"] / L["neurons"] for L in layers],
            marker=MARKERS[k % len(MARKERS)],
            color=colours[k % 10],
            label=f"{stem} ({_windows(best)})",
        )
    ax.set_xlabel("spiking layer (0 = input pixels)")
    ax.set_ylabel("spikes per neuron per image")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(RESULTS / "spikes_per_layer.png", dpi=120)
    made.append("spikes_per_layer.png")
    plt.close(fig)

    raster = RESULTS / "raster.json"
    if raster.exists():
        r = json.loads(raster.read_text())
        fig, ax = plt.subplots(figsize=(8, 5))
        for i, layer in enumerate(r["layers"]):
            on = [t for t in layer["on"] if t is not None]
            ax.scatter(
                on, [i + 0.8 * (k / max(1, len(layer["on"]))) for k in range(len(on))], s=2, c="tab:blue"
            )
            ax.axvline(layer["off"], color="tab:red", lw=0.3)
        ax.set_yticks(range(len(r["layers"])), [layer["name"] for layer in r["layers"]], fontsize=6)
        ax.set_xlabel(
            "timestep (blue: on-spikes of sampled neurons; red: shared off-spike at each window end)"
        )
        ax.set_title(
            f"{r['model']}, T={r['T']}: one '{r['label']}' test image (predicted '{r['predicted']}')",
            fontsize=9,
        )
        fig.tight_layout()
        fig.savefig(RESULTS / "raster.png", dpi=120)
        made.append("raster.png")
        plt.close(fig)
    return made


def render() -> Path:
    """Write docs/results.md and the plots from the JSON in docs/results/."""
    reports = {
        stem: json.loads((RESULTS / f"{stem}.json").read_text())
        for stem, *_ in MEASUREMENTS
        if (RESULTS / f"{stem}.json").exists()
    }
    lines = [
        "# Results",
        "",
        "Generated by `python -m benchmarks.results` from the JSON files in `docs/results/` (each one the "
        "output of `python -m converter sweep`); do not edit by hand. Data: the **original CIFAR-10** "
        "(`cifar10-binary-lossless.tar.gz`, bit-exact), 10,000 test images unless a table says otherwise; "
        "calibration and the allocation's held-out images come from the training split. Accuracy is top-1; "
        "operations are per image, averaged over the images evaluated.",
        "",
        *_summary(reports),
        *_levers(reports),
        "## Per model",
        "",
    ]
    for stem, title, paper_key, _ in MEASUREMENTS:
        if stem in reports:
            lines += _model_section(stem, title, paper_key, reports[stem])
        else:
            lines += [f"### {title}", "", f"Not measured: `docs/results/{stem}.json` is missing.", ""]
    lines += [
        "## Earlier measurements on the JPEG copy (not comparable with the paper)",
        "",
        "Measured before the original pixels were available, on a JPEG re-encode that costs a model trained "
        "on the original about 10 points. The VGG-16 weights (GPU-trained, 59 MB) are not in the repository, "
        "so these rows were not remeasured; they stay for reference only.",
        "",
    ]
    for stem, title, paper_key in JPEG_MEASUREMENTS:
        path = JPEG / f"{stem}.json"
        if path.exists():
            lines += _model_section(f"jpeg/{stem}", title, paper_key, json.loads(path.read_text()))
    lines += [
        "### ResNet-34 / ImageNet, CIFAR-100",
        "",
        "No data for them here. The code paths (ImageFolder at 224 px, the CIFAR-100 archive reader, "
        "ResNet-34 with its max-pool stem) are exercised on tiny synthetic data in the test suite.",
        "",
    ]
    plots = _plots(reports) if reports else []
    if plots:
        lines += ["## Plots", ""] + [f"![{p}](results/{p})" for p in plots] + [""]
    lines += [
        "## Regenerate",
        "",
        "```",
        "make train-resnet20 lossless-resnet20 convert-resnet20   # default model, runs in RUNS",
        "make results                                             # missing sweeps, then render",
        "```",
        "",
    ]
    out = DOCS / "results.md"
    out.write_text("\n".join(lines))
    return out


def main() -> None:
    """Measure (unless ``--render-only``), then render."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="dataset spec, e.g. imagefolder:data/cifar10")
    ap.add_argument("--remeasure", action="store_true")
    ap.add_argument(
        "--only", type=lambda t: t.split(","), help="measure these sweeps (comma-separated stems)"
    )
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    if not args.render_only:
        if not args.data:
            ap.error("--data is needed to measure")
        measure(args.data, args.remeasure, args.only)
    print(f"wrote {render()}")


if __name__ == "__main__":
    main()
