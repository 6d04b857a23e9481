"""The measurements: sweeps into ``docs/results/*.json`` with the facts of their run, and the spike raster."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.results.catalogue import DEFAULT_MODEL, MEASUREMENTS, RESULTS
from converter.snn.system import available_cores


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
    lineage = cycles(run)
    summary = lineage[-1]
    total = sum(c["epochs"] for c in lineage)
    started_from = {}
    if len(lineage) > 1:  # warm restarts: the runs it started from, oldest first
        started_from = {"init": lineage[-2]["run"], "cycles": cycles_phrase(lineage), "total_epochs": total}
    schedule = state["args"]["schedule"]
    return {
        "run": run.name,
        "epochs": state["epoch"],
        "planned_epochs": state["args"]["epochs"],
        "best_epoch": state["best_epoch"],
        "schedule": schedule,
        "recipe": recipe_phrase(lineage, schedule, total),
        "label_smoothing": state["args"]["label_smoothing"],
        "ema_decay": summary.get("ema_decay"),
        "bf16": summary.get("bf16"),
        "clip_floor": summary["clip_floor"],
        "dataset": summary["dataset"],
        "trained_at": summary["date"],
        **started_from,
    }


def cycles(run: Path) -> list[dict[str, Any]]:
    """The ``model.json`` of a run and of each run it started from (``init``), oldest first, named ``run``."""
    lineage: list[dict[str, Any]] = []
    folder: Path | None = run
    while folder is not None and (folder / "model.json").exists() and len(lineage) < 64:
        summary = {**json.loads((folder / "model.json").read_text()), "run": folder.name}
        lineage.insert(0, summary)
        folder = Path(summary["init"]).parent if summary.get("init") else None
    return lineage


def recipe_phrase(lineage: list[dict[str, Any]], schedule: str, total: int) -> str:
    """Training in words: ``120 epochs, one cosine schedule, an EMA of the weights (0.999)``, or cycles."""
    if len(lineage) > 1:
        return f"{total} epochs: {schedule} cycles of {cycles_phrase(lineage)}"
    decay = lineage[0].get("ema_decay")
    return f"{total} epochs, one {schedule} schedule" + (
        f", an EMA of the weights ({decay:g})" if decay else ""
    )


def cycles_phrase(lineage: list[dict[str, Any]]) -> str:
    """Cycle lengths in words, e.g. ``20 + 12 + 6, an EMA of the weights (0.999) in cycle 3``."""
    phrase = " + ".join(str(c["epochs"]) for c in lineage)
    averaged = [i for i, c in enumerate(lineage, 1) if c.get("ema_decay")]
    if not averaged:
        return phrase
    decays = ", ".join(sorted({f"{lineage[i - 1]['ema_decay']:g}" for i in averaged}))
    numbers = [str(i) for i in averaged]
    listed = " and ".join(filter(None, (", ".join(numbers[:-1]), numbers[-1])))
    some = ("cycles " if len(numbers) > 1 else "cycle ") + listed
    where = "every cycle" if len(averaged) == len(lineage) else some
    return f"{phrase}, an EMA of the weights ({decays}) in {where}"


def spike_raster(checkpoint: Path, data: str, neurons_per_layer: int = 64) -> dict[str, Any]:
    """On/off spike times of sampled neurons per layer for the first correctly classified test image."""
    from converter import load
    from converter.snn.raster import spike_raster
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
            "stage": net.graph.by_name[r.name].stage,
            "start": r.start,
            "on": r.on,
            "off": r.off,
        }
        for r in spike_raster(net, res.durations, 0, neurons_per_layer)
    ]
    return {
        "model": net.name,
        "T": net.T,
        "timesteps": net.timesteps,
        "label": test.classes[int(test.labels[index])],
        "predicted": net.labels[int(res.logits.argmax())],
        "layers": layers,
    }
