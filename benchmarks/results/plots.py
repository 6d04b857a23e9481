"""The report's plots (PNG, matplotlib): accuracy curves, operations, spikes per layer, the spike raster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from benchmarks.results.formatting import method, windows

MARKERS = "osD^v<>pXh*P8dH"
_TAB20 = matplotlib.colormaps["tab20"].colors
COLOURS = _TAB20[::2] + _TAB20[1::2]  # 20 distinct colours, the strong ten first
DPI = 120


def _style(i: int) -> dict[str, Any]:
    """Marker and colour of the i-th curve of a plot."""
    return {"marker": MARKERS[i % len(MARKERS)], "color": COLOURS[i % len(COLOURS)]}


def _legend(ax: Axes, fontsize: int = 7) -> None:
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _save(fig: Figure, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=DPI)
    return name


def plots(reports: dict[str, dict[str, Any]], out: Path) -> list[str]:
    """Draw every plot into ``out`` from the sweep reports (and ``out/raster.json``); returns the files."""
    made = [
        _accuracy(reports, out, "accuracy_vs_timesteps.png", "timesteps", "total timesteps per inference"),
        _accuracy(
            reports, out, "accuracy_vs_additions.png", "synaptic_additions", "synaptic additions per image"
        ),
        _operations(reports, out),
        _spikes_per_layer(reports, out),
    ]
    raster = out / "raster.json"
    if raster.exists():
        made.append(_raster(json.loads(raster.read_text()), out))
    return made


def _accuracy(reports: dict[str, dict[str, Any]], out: Path, name: str, key: str, xlabel: str) -> str:
    """Accuracy against ``key``: a curve per TSC method and per rate-coded v0, a line per distinct ANN."""
    fig = Figure(figsize=(10, 5))
    ax = fig.subplots()
    i = 0
    for stem, report in reports.items():
        series: dict[str, list[dict[str, Any]]] = {}
        for r in report["runs"]:
            series.setdefault(method(r, " + window allocation"), []).append(r)
        for label, runs in series.items():
            pts = sorted((r["tsc"][key], 100 * r["tsc"]["accuracy"]) for r in runs)
            ax.plot(
                *zip(*pts, strict=True),
                **_style(i),
                label=f"{stem}: TSC {label} ({report['test_images']} img)",
            )
            i += 1
        for v0 in sorted({q.get("v0", 0) for q in report.get("rate", [])}):
            rate = [q for q in report["rate"] if q.get("v0", 0) == v0]
            ax.plot(
                [q[key] for q in rate],
                [100 * q["accuracy"] for q in rate],
                **_style(i),
                linestyle="--",
                label=f"{stem}: rate v0={v0:g} ({rate[0]['images']} img)",
            )
            i += 1
        for mode in dict.fromkeys(q["mode"] for q in report.get("spikingjelly", [])):
            sj = [q for q in report["spikingjelly"] if q["mode"] == mode]
            ax.plot(
                [q[key] for q in sj],
                [100 * q["accuracy"] for q in sj],
                **_style(i),
                linestyle="-.",
                label=f"{stem}: SpikingJelly {mode} ({sj[0]['images']} img)",
            )
            i += 1
    drawn = set()
    for stem, report in reports.items():  # one reference line per distinct ANN, named in the legend
        y = 100 * report["ann"]["accuracy"]
        if y not in drawn:
            drawn.add(y)
            colour = _style(i)["color"]
            ax.axhline(y, color=colour, lw=1.0, linestyle=":", label=f"{stem}: ANN {y:.2f}%")
            i += 1
    ax.set_xscale("log", base=2)
    ax.set_ylim(max(0, ax.get_ylim()[0]), 100)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy % (original CIFAR-10)")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, out, name)


def _operations(reports: dict[str, dict[str, Any]], out: Path) -> str:
    """Operations per image: ANN MACs, additions of the most accurate TSC run and of the best rate run."""
    fig = Figure(figsize=(10, 4.5))
    ax = fig.subplots()
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
        ax.bar([j + (k - 1) * width for j in range(len(names))], values, width, label=label, color=COLOURS[k])
    ax.set_xticks(range(len(names)), names, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("operations per image")
    _legend(ax, fontsize=8)
    return _save(fig, out, "operations.png")


def _spikes_per_layer(reports: dict[str, dict[str, Any]], out: Path) -> str:
    """Spikes per neuron in each spiking layer of every model's most accurate TSC run."""
    fig = Figure(figsize=(10, 4.5))
    ax = fig.subplots()
    for k, (stem, report) in enumerate(reports.items()):
        best = max(report["runs"], key=lambda r: r["tsc"]["accuracy"])
        layers = [L for L in best["tsc"]["layers"] if L["kind"] in ("input", "neuron")]
        ax.plot(
            range(len(layers)),
            [L["spikes"] / L["neurons"] for L in layers],
            **_style(k),
            label=f"{stem} ({windows(best)})",
        )
    ax.set_xlabel("spiking layer (0 = input pixels)")
    ax.set_ylabel("spikes per neuron per image")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, out, "spikes_per_layer.png")


def _raster(r: dict[str, Any], out: Path) -> str:
    """On-spikes of the sampled neurons of one image, layer by layer, with each window's off-spike."""
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for i, layer in enumerate(r["layers"]):
        on = [t for t in layer["on"] if t is not None]
        ax.scatter(on, [i + 0.8 * (k / max(1, len(layer["on"]))) for k in range(len(on))], s=2, c="tab:blue")
        ax.axvline(layer["off"], color="tab:red", lw=0.3)
    ax.set_yticks(range(len(r["layers"])), [layer["name"] for layer in r["layers"]], fontsize=6)
    ax.set_xlabel("timestep (blue: on-spikes of sampled neurons; red: shared off-spike at each window end)")
    ax.set_title(
        f"{r['model']}, T={r['T']}: one '{r['label']}' test image (predicted '{r['predicted']}')", fontsize=9
    )
    return _save(fig, out, "raster.png")
