"""The report's markdown: the summary, the latency levers, a section per model and its claims."""

from __future__ import annotations

from typing import Any

from benchmarks.results import claims as stats
from benchmarks.results.catalogue import FAMILIES, MEASUREMENTS, PAPER, PAPER_LATENCIES, family
from benchmarks.results.formatting import fixed_latency, method, num, pct, windows


def _span(values: list[float], digits: int) -> str:
    return "-" if not values else f"{min(values):.{digits}f}-{max(values):.{digits}f}x"


def summary(reports: dict[str, dict[str, Any]]) -> list[str]:
    """One line per model: how close TSC gets to its ANN, and the paper's two ratios at equal accuracy."""
    lines = [
        "## Summary",
        "",
        "| model | ANN % | shortest TSC run within 0.5 points of the ANN | rate images "
        "| rate/TSC additions at equal accuracy | rate/TSC timesteps at equal accuracy |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for stem, report in reports.items():
        close = stats.closest_to_ann(report)
        tsc = (
            f"{close['calibration']}, T = {windows(close)}: {close['tsc']['timesteps']} steps, "
            f"{pct(close['tsc']['accuracy'])}%"
            if close
            else "none"
        )
        adds, steps = stats.equal_accuracy_ratios(report)
        images = report["rate"][0]["images"] if report.get("rate") else "-"
        lines.append(
            f"| `{stem}` | {pct(report['ann']['accuracy'])} | {tsc} | {images} | {_span(adds, 1)} "
            f"| {_span(steps, 2)} |"
        )
    lines += [
        "",
        "The paper reports 30-60x fewer additions and 7-14.5x fewer timesteps than rate coding. Our rate "
        "baseline shares TSC's thresholds, resets by subtraction and gates max pooling by rate, so it nears "
        "the ANN in few steps (tables below), while TSC's latency grows as L·T (spec section 3).",
        "",
    ]
    return lines


def _how(report: dict[str, Any], run: dict[str, Any]) -> str:
    """How a run was made: its calibration and windows, or the clip-floor training that fixed both."""
    trained = report.get("training", {}).get("clip_floor")
    if trained:
        return f"clip-floor trained at these windows ({report['training']['run']}), lossless by construction"
    return method(run)


def _lossless(rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """The shortest run within 0.1 point (10 images in 10,000) of its own ANN, as ``steps: accuracy``."""
    close = [(r, rep) for rep, r in rows if r["tsc"]["accuracy"] >= rep["ann"]["accuracy"] - 0.001 - 1e-9]
    if not close:
        return "none"
    r, rep = min(close, key=lambda x: x[0]["tsc"]["timesteps"])
    return (
        f"{r['tsc']['timesteps']} steps: {pct(r['tsc']['accuracy'])} "
        f"(its ANN {pct(rep['ann']['accuracy'])}; {_how(rep, r)})"
    )


def paper_table(reports: dict[str, dict[str, Any]]) -> list[str]:
    """The paper's CIFAR-10 table beside ours: TSC accuracy at its total timesteps, lossless, rate-coded."""
    head = " | ".join(f"TSC at {n} steps" for n in PAPER_LATENCIES)
    lines = [
        "## The paper's table, like for like",
        "",
        "TSC accuracy % at the paper's total timesteps (latency, spec section 1), on all 10,000 test images: "
        "per-layer windows chosen for exactly that latency (`--T latency:N`) or uniform ones that reach it; "
        "the best calibration measured at each latency. *Lossless*: the shortest run within 0.1 point of its "
        "own ANN (a clip-floor trained network is its own ANN). The paper's table gives ResNet-20 at 64 and "
        "512 steps only (spec section 9).",
        "",
        f"| model | ANN % | {head} | shortest lossless run | best rate-coded % |",
        "| --- | ---: |" + " ---: |" * len(PAPER_LATENCIES) + " --- | --- |",
    ]
    for key in ("resnet20", "vgg16"):
        paper = PAPER[key]
        cells = " | ".join(str(paper["latency"].get(n, "-")) for n in PAPER_LATENCIES)
        name = "ResNet-20" if key == "resnet20" else "VGG-16"
        lines.append(
            f"| paper, {name} | {paper['ann']} | {cells} | {paper['latency'][512]} at 512 | {paper['rate']} |"
        )
    how = []
    for fam, title in FAMILIES.items():
        rows = [(rep, r) for stem, rep in reports.items() if family(stem) == fam for r in rep["runs"]]
        if not rows:
            continue
        ann = max(rep["ann"]["accuracy"] for rep, _ in rows if not rep.get("training", {}).get("clip_floor"))
        cells, methods = [], {}
        for n in PAPER_LATENCIES:
            at = [(rep, r) for rep, r in rows if r["tsc"]["timesteps"] == n]
            best = max(at, key=lambda x: x[1]["tsc"]["accuracy"], default=None)
            cells.append(pct(best[1]["tsc"]["accuracy"]) if best else "not measured")
            if best:
                methods.setdefault(_how(*best), []).append(str(n))
        cells += [_lossless(rows), _best_rate(rows)]
        lines.append(f"| ours: {title} | {pct(ann)} | {' | '.join(cells)} |")
        how += [f"{title}, {', '.join(steps)} steps: {m}." for m, steps in methods.items()]
    lines += [
        "| ours: VGG-16 |" + " not measured |" * (len(PAPER_LATENCIES) + 2) + " - |",
        "",
        "VGG-16 is not measured on the original pixels: training it to the paper's 93.6% takes a GPU "
        "(`make train-vgg16 DEVICE=cuda`), and none was available.",
        "",
        *[f"- {line}" for line in how],
        "",
    ]
    return lines


def _best_rate(rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """The most accurate rate-coded run of a model, with the ANN on its image subset beside it."""
    rate = [(q, rep) for rep, _ in rows for q in rep.get("rate", [])]
    if not rate:
        return "-"
    q, rep = max(rate, key=lambda x: (x[0]["accuracy"], -x[0]["timesteps"]))
    return (
        f"{pct(q['accuracy'])} at T_rate = {q['timesteps']} on {q['images']} images "
        f"(ANN {pct(rep['ann'].get('accuracy_on_rate_subset'))} there)"
    )


def _allocation_search(stem: str, report: dict[str, Any], run: dict[str, Any]) -> str:
    a = run["allocation"]
    host = report.get("host")
    where = f" on {host['cpu_cores']} CPU cores" if host else ""
    return (
        f"`{stem}`: budget {a['max_drop_points']:g} point(s), {a['seconds'] / 60:.1f} min{where}, "
        f"{a['holdout_images']} held-out training images (ANN {pct(a['ann_accuracy'])}% there, "
        f"TSC {pct(a['accuracy'])}%), {'within' if a['within_budget'] else 'NOT within'} the budget"
    )


def levers(reports: dict[str, dict[str, Any]]) -> list[str]:
    """Section "Latency levers": every TSC run per model, shortest first, with the rate baselines beside."""
    lines = [
        "## Latency levers",
        "",
        "Per model, every TSC configuration measured, shortest first: calibration (percentile, error-aware "
        "with bias correction), per-layer windows (uniform, or chosen by the allocation search within an "
        "accuracy budget on held-out training images), low-T clip-floor training (windows fixed by "
        "training). Beside them, the rate-coded baselines on their own image subset, starting at rest "
        "(v0 = 0) or at half the threshold (v0 = 0.5, QCFS), and SpikingJelly's own ann2snn conversion of "
        "the float network by normalisation mode (`python -m benchmarks.spikingjelly`).",
        "",
    ]
    models: dict[str, list[tuple[str, dict[str, Any], dict[str, Any]]]] = {}
    for m in MEASUREMENTS:
        if m.stem in reports:
            for r in reports[m.stem]["runs"]:
                models.setdefault(family(m.stem), []).append((m.stem, reports[m.stem], r))
    for base, rows in models.items():
        lines += [
            f"### {FAMILIES[base]}",
            "",
            "| sweep | method | windows T_l | total timesteps | accuracy % | ANN % | additions / image |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for stem, report, r in sorted(rows, key=lambda x: x[2]["tsc"]["timesteps"]):
            t = r["tsc"]
            lines.append(
                f"| `{stem}` | {method(r)} | {windows(r)} | {t['timesteps']} | {pct(t['accuracy'])} "
                f"| {pct(report['ann']['accuracy'])} | {num(t['synaptic_additions'])} |"
            )
        seen = set()
        for stem, report, _ in rows:
            for q in report.get("rate", []):
                key = (stem, q["timesteps"], q.get("v0", 0))
                if key in seen:
                    continue
                seen.add(key)
                lines.append(
                    f"| `{stem}` | rate, v0 = {q.get('v0', 0):g} ({q['images']} images) | - "
                    f"| {q['timesteps']} | {pct(q['accuracy'])} | - | {num(q['synaptic_additions'])} |"
                )
        for stem in dict.fromkeys(stem for stem, _, _ in rows):
            lines += [
                f"| `{stem}` | SpikingJelly ann2snn, {q['mode']} ({q['images']} images) | - "
                f"| {q['timesteps']} | {pct(q['accuracy'])} | - | {num(q['synaptic_additions'])} |"
                for q in reports[stem].get("spikingjelly", [])
            ]
        lines.append("")
        searches = [
            _allocation_search(stem, report, r)
            for stem, report, r in rows
            if "allocation" in r and not fixed_latency(r)
        ]
        if searches:
            lines += ["Allocation searches (cost measured in the same run):", ""]
            lines += [f"- {line}" for line in searches] + [""]
    return lines


def model_section(stem: str, title: str, paper_key: str, report: dict[str, Any]) -> list[str]:
    """A model's section: its TSC runs, the paper's figures, and its rate-coded baseline with the claims."""
    ann = report["ann"]
    paper = PAPER[paper_key]
    lines = [
        f"### {title}",
        "",
        f"`{stem}` — {report['test_images']} test images; ANN accuracy **{pct(ann['accuracy'])}%** "
        f"(paper: {paper['ann']}%); {num(ann['ann_macs'])} MACs per image.",
        "",
        "| calibration | windows T_l | total timesteps | accuracy % | spikes / image | additions / image "
        "| memory accesses / image | neuron updates / image |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["runs"]:
        t = r["tsc"]
        lines.append(
            f"| {r['calibration']} | {windows(r)} | {t['timesteps']} | {pct(t['accuracy'])} | "
            f"{num(t['spikes'])} | {num(t['synaptic_additions'])} | {num(t['memory_accesses'])} | "
            f"{num(t['neuron_updates'])} |"
        )
    lines += [
        "",
        f"Paper, TSC-SNN: {paper['tsc']}; best rate-coded in the paper's table: {paper['rate']}.",
        "",
    ]
    if report.get("rate"):
        lines += [
            f"Rate-coded IF baseline (spec section 8) on a fixed class-mixed subset of "
            f"{report['rate'][0]['images']} test images "
            f"(ANN on the same subset: {pct(ann.get('accuracy_on_rate_subset'))}%):",
            "",
            "| T_rate | initial potential v0 | accuracy % | spikes / image | additions / image "
            "| neuron updates / image |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {r['timesteps']} | {r.get('v0', 0):g} | {pct(r['accuracy'])} | {num(r['spikes'])} | "
            f"{num(r['synaptic_additions'])} | {num(r['neuron_updates'])} |"
            for r in report["rate"]
        ]
        lines += ["", *claims(report), ""]
    return lines


def claims(report: dict[str, Any]) -> list[str]:
    """The paper's two claims on our numbers, compared on the rate-coded subset (like for like)."""
    best = stats.best_rate(report)
    n = best["images"]
    lines = [
        f"Best rate-coded run: {pct(best['accuracy'])}% at T_rate = {best['timesteps']}, "
        f"v0 = {best.get('v0', 0):g} "
        f"({num(best['synaptic_additions'])} additions per image), on {n} images.",
        "",
    ]
    c = stats.as_good_as(report, best)
    if c:
        lines.append(
            f"The paper's comparison: the smallest TSC run within one image of it on the same images is "
            f"{c['calibration']}, T = {windows(c)} ({c['tsc']['timesteps']} steps, "
            f"{pct(c['tsc']['accuracy_on_rate_subset'])}% there, {pct(c['tsc']['accuracy'])}% on all): "
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
    longest = stats.rate_runs(report)[-1]["timesteps"]
    for r, match in stats.equal_accuracy(report):
        head = (
            f"| {r['calibration']}, T = {windows(r)} | {r['tsc']['timesteps']} "
            f"| {pct(r['tsc']['accuracy_on_rate_subset'])} "
        )
        if match is None:
            lines.append(head + f"| none up to {longest} | - | - | - |")
            continue
        lines.append(
            head + f"| {match['timesteps']} | {pct(match['accuracy'])} "
            f"| {match['timesteps'] / r['tsc']['timesteps']:.2f}x "
            f"| {match['synaptic_additions'] / r['tsc']['synaptic_additions']:.1f}x |"
        )
    lines += [
        "",
        f"With {n} images one image is {100 / n:.1f} points of accuracy: the rate-coded figures are "
        "indicative only.",
    ]
    return lines
