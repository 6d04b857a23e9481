"""The measurements: sweeps into ``docs/results/*.json`` with the facts of their run, and the spike raster."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.results.catalogue import DEFAULT_MODEL, MEASUREMENTS, RESULTS
from converter.system import available_cores


def measure(data: str, remeasure: bool, only: list[str] | None = None) -> None:
    """Run the sweeps whose JSON is missing (all: ``remeasure``; named: ``only``) and the spike raster."""
    from converter.cli import main

    RESULTS.mkdir(parents=True, exist_ok=True)
    for m in MEASUREMENTS:
        out = RESULTS / f"{m.stem}.json"
        run = Path(m.argv[1]) if m.argv[0] == "--run" else None
        wanted = m.stem in only if only else remeasure or not out.exists()
        if not wanted or (run is not None and not run.exists()):
            continue
        print(f"measuring {m.stem} ...", file=sys.stderr)
        code = main(["sweep", *m.argv, "--data", data, "--json-out", str(out)])
        if code:
            raise SystemExit(f"sweep for {m.stem} failed with status {code}")
        record_context(out, run)
    raster = RESULTS / "raster.json"
    if DEFAULT_MODEL.exists() and (remeasure or not raster.exists()):
        raster.write_text(json.dumps(spike_raster(DEFAULT_MODEL, data)))


def record_context(report: Path, run: Path | None) -> None:
    """Add to a sweep's JSON the machine it ran on and, for a training run, what the training reached."""
    content = json.loads(report.read_text())
    content["host"] = {"cpu_cores": available_cores(), "torch_threads": torch.get_num_threads()}
    if run is not None:
        content["training"] = training_record(run)
    report.write_text(json.dumps(content, indent=1) + "\n")


def training_record(run: Path) -> dict[str, Any]:
    """What a ``python -m converter train`` run folder reached, from its ``state.json`` and ``model.json``."""
    state = json.loads((run / "state.json").read_text())
    summary = json.loads((run / "model.json").read_text())
    parent = Path(summary["init"]).parent if summary.get("init") else None
    started_from = {}
    if parent is not None and (parent / "model.json").exists():  # a warm restart: what it started from
        started_from = {
            "init": parent.name,
            "init_epochs": json.loads((parent / "model.json").read_text())["epochs"],
        }
    return {
        "run": run.name,
        "epochs": state["epoch"],
        "planned_epochs": state["args"]["epochs"],
        "best_epoch": state["best_epoch"],
        "schedule": state["args"]["schedule"],
        "label_smoothing": state["args"]["label_smoothing"],
        "clip_floor": summary["clip_floor"],
        "dataset": summary["dataset"],
        "trained_at": summary["date"],
        **started_from,
    }


def spike_raster(checkpoint: Path, data: str, neurons_per_layer: int = 64) -> dict[str, Any]:
    """On/off spike times of sampled neurons per layer for the first correctly classified test image."""
    from converter import load
    from converter.raster import raster
    from converter.training.datasets import open_dataset, to_float

    net = load(checkpoint)
    test = open_dataset(data, "test", cache_dir=".cache/datasets")
    first = to_float(test.images[:64])
    right = (net.run(first, "fast").logits.argmax(1) == test.labels[:64]).nonzero()
    index = int(right[0]) if len(right) else 0
    image = first[index : index + 1]
    res = net.run(image, "stepped", keep_durations=True)
    layers = [
        {
            "name": r.name,
            "window": net.graph.by_name[r.name].window,
            "start": r.start,
            "on": r.on,
            "off": r.off,
        }
        for r in raster(net, res.durations, 0, neurons_per_layer)
    ]
    return {
        "model": net.name,
        "T": net.T,
        "timesteps": net.timesteps,
        "label": test.classes[int(test.labels[index])],
        "predicted": net.labels[int(res.logits.argmax())],
        "layers": layers,
    }
