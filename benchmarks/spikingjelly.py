"""SpikingJelly's own ann2snn conversion of a float network, measured on the project's images.

    PYTHONPATH=. python -m benchmarks.spikingjelly --data cifar10:PATH   # the third-party ResNet-20
    PYTHONPATH=. python -m benchmarks.spikingjelly --data cifar10:PATH --weights RUN/best.safetensors

SpikingJelly's ``ann2snn.Converter`` (the version ``requirements-bench.txt`` pins) fuses BatchNorm into the
convs, calibrates one scale per ReLU on training images (``--modes``: ``max``, a percentile such as
``99.9%``, or a fraction of the max such as ``0.5``; its running average over batches, momentum 0.1) and
puts integrate-and-fire neurons (threshold 1, reset by subtraction, from rest) between scalers in place of
each ReLU. It only converts ``nn.ReLU`` modules, so every ReLU call (functional ones too) becomes its own
module first. The pixels drive the first layer directly at every step. One run of ``--max-steps`` steps per
mode; accuracy at each of ``--steps`` is the argmax of the outputs accumulated so far, with a 95% Wilson
interval, as rows rest on ``--images`` test images (the ANN's accuracy on the same images beside it).
The JSON keeps the rows of other modes from an earlier run on the same network, data and images, so the
modes can be measured one run at a time.

Counted per image, as the project's rate engine counts (``converter/snn/engines/rate.py``): spikes, the
IF neurons' spikes up to that step; synaptic additions, for each spike the fan-out of the neuron that fired,
that is the distinct synapses it drives (spec section 6). The fan-outs are the project's own
(``converter.snn.counting`` through ``convert``): each IF layer takes those of the network population whose
ANN activations equal its ReLU's. The analog pixels into the first layer and the output layer's integration
are not spikes and add nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, neuron
from spikingjelly.activation_based.ann2snn import Converter
from torch import Tensor, fx, nn

from converter import convert
from converter.snn.engines import ann
from converter.training.datasets import open_dataset, to_float
from converter.training.trained import load_trained

STEPS = (4, 8, 16, 32, 64, 128, 256)
MODES = ("max", "99.9%", "0.5", "0.333")
FUNCTIONAL_RELUS = (F.relu, torch.relu)


def modular_relus(model: nn.Module) -> fx.GraphModule:
    """The model traced, every ReLU call (module or functional) its own ``nn.ReLU`` module, in graph order."""
    gm = fx.symbolic_trace(copy.deepcopy(model).eval())
    modules = dict(gm.named_modules())
    count = 0
    for node in list(gm.graph.nodes):
        is_module = node.op == "call_module" and type(modules[node.target]) is nn.ReLU
        is_function = node.op == "call_function" and node.target in FUNCTIONAL_RELUS
        if not (is_module or is_function or (node.op == "call_method" and node.target == "relu")):
            continue
        name = f"sj_relu{count}"
        count += 1
        gm.add_submodule(name, nn.ReLU())
        with gm.graph.inserting_after(node):
            node.replace_all_uses_with(gm.graph.call_module(name, (node.args[0],)))
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return gm


def relu_fanouts(model: nn.Module, gm: fx.GraphModule, calibration: Tensor) -> list[Tensor]:
    """Per ReLU of ``gm`` (graph order), the fan-out of each of its neurons, flat (float64)."""
    net = convert(model, calibration, T=4, method="max")
    x = calibration[:8]
    acts: dict[str, Tensor] = {}
    ann.forward(net.graph, x.to(net.dtype), activations=acts)
    relus: list[Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, y: relus.append(y)) for m in _relus(gm)]
    with torch.no_grad():
        gm(x)
    for h in hooks:
        h.remove()
    neurons = [p for p in net.graph.populations if p.kind == "neuron"]
    fanouts = []
    for k, y in enumerate(relus):
        same = [p for p in neurons if acts[p.name].shape == y.shape and _close(acts[p.name], y)]
        if len(same) != 1:
            raise ValueError(f"ReLU {k} matches {len(same)} populations of the converted network, not one")
        fanouts.append(net.fanouts[same[0].name].double())
    return fanouts


def _relus(gm: fx.GraphModule) -> list[nn.Module]:
    """The ReLU modules of a ``modular_relus`` graph, in graph order."""
    called = [gm.get_submodule(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    return [m for m in called if type(m) is nn.ReLU]


def _close(a: Tensor, b: Tensor) -> bool:
    """Equal activations up to float32 rounding (BatchNorm folded in float64 on one side)."""
    return bool((a.float() - b).abs().max() <= 1e-3 * (1 + b.abs().max()))


def sj_convert(gm: fx.GraphModule, calibration: Tensor, mode: str | float, batch_size: int) -> fx.GraphModule:
    """SpikingJelly's conversion of ``gm`` with one normalisation mode, calibrated on ``calibration``."""
    loader = [(b, None) for b in calibration.split(batch_size)]
    return Converter(loader, mode=mode)(copy.deepcopy(gm))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of ``k`` successes in ``n`` trials."""
    p, d = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def simulate(
    snn: fx.GraphModule, fanouts: list[Tensor], images: Tensor, labels: Tensor, steps: list[int], batch: int
) -> list[dict[str, Any]]:
    """Run ``max(steps)`` steps; per step count: correct answers, spikes and additions, summed over images."""
    named = [(k, m) for k, m in snn.named_modules() if isinstance(m, neuron.IFNode)]
    ifs = [m for _, m in sorted((int(k.split(".")[1]), m) for k, m in named)]  # "snn tailor.K.1": K-th ReLU
    if len(ifs) != len(fanouts):
        raise ValueError(f"{len(ifs)} IF layers for {len(fanouts)} ReLUs: not every ReLU was converted")
    tally = {"spikes": 0.0, "additions": 0.0}

    def count(fanout: Tensor):
        def hook(_m: nn.Module, _i: Any, s: Tensor) -> None:
            fired = s.detach().flatten(1).double()
            tally["spikes"] += float(fired.sum())
            tally["additions"] += float((fired @ fanout).sum())

        return hook

    hooks = [m.register_forward_hook(count(f)) for m, f in zip(ifs, fanouts, strict=True)]
    rows = {t: {"T": t, "correct": 0, "spikes": 0.0, "additions": 0.0} for t in steps}
    try:
        with torch.no_grad():
            for x, y in zip(images.split(batch), labels.split(batch), strict=True):
                functional.reset_net(snn)
                total = torch.zeros(())
                for t in range(1, max(steps) + 1):
                    total = total + snn(x)
                    if t in rows:
                        rows[t]["correct"] += int((total.argmax(1) == y).sum())
                        rows[t]["spikes"] += tally["spikes"]
                        rows[t]["additions"] += tally["additions"]
                tally.update(spikes=0.0, additions=0.0)
    finally:
        for h in hooks:
            h.remove()
        functional.reset_net(snn)
    return [rows[t] for t in steps]


def measure(
    model: nn.Module,
    calibration: Tensor,
    images: Tensor,
    labels: Tensor,
    modes: list[str | float],
    steps: list[int],
    batch_size: int = 100,
    after_mode: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The ANN's accuracy, and per mode and step count SpikingJelly's (Wilson CI), spikes and additions.

    ``after_mode`` sees the report so far after each mode (a long run keeps what it measured).
    """
    n = len(labels)
    model = model.eval()
    with torch.no_grad():
        answers = torch.cat([model(x).argmax(1) for x in images.split(batch_size)])
    ann_correct = int((answers == labels).sum())
    gm = modular_relus(model)
    fanouts = relu_fanouts(model, gm, calibration)
    low, high = wilson(ann_correct, n)
    runs: list[dict[str, Any]] = []
    report = {
        "ann": {"accuracy": ann_correct / n, "ci95": [low, high], "images": n},
        "runs": runs,
        "spikingjelly": version("spikingjelly"),
        "calibration_images": len(calibration),
        "spiking_layers": len(fanouts),
    }
    for mode in modes:
        start = time.perf_counter()
        snn = sj_convert(gm, calibration, mode, batch_size)
        for r in simulate(snn, fanouts, images, labels, steps, batch_size):
            low, high = wilson(r["correct"], n)
            runs.append(
                {
                    "mode": str(mode),
                    "timesteps": r["T"],
                    "accuracy": r["correct"] / n,
                    "ci95": [low, high],
                    "spikes": r["spikes"] / n,
                    "synaptic_additions": r["additions"] / n,
                    "images": n,
                }
            )
        runs[-1]["seconds"] = round(time.perf_counter() - start, 1)
        if after_mode is not None:
            after_mode(report)
    return report


def table(report: dict[str, Any]) -> str:
    """The report as a markdown table: one row per mode and step count."""
    ann_acc, (lo, hi) = report["ann"]["accuracy"], report["ann"]["ci95"]
    lines = [
        f"ANN {100 * ann_acc:.2f}% [{100 * lo:.1f}, {100 * hi:.1f}] on {report['ann']['images']} images",
        "",
        "| mode | T | accuracy % | 95% CI | spikes / image | additions / image |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in report["runs"]:
        lo, hi = r["ci95"]
        lines.append(
            f"| {r['mode']} | {r['timesteps']} | {100 * r['accuracy']:.2f} | [{100 * lo:.1f}, "
            f"{100 * hi:.1f}] | {r['spikes']:,.0f} | {r['synaptic_additions']:,.0f} |"
        )
    return "\n".join(lines)


def _mode(text: str) -> str | float:
    """A mode as SpikingJelly takes it: 'max', 'P%' or a float fraction of the max."""
    return text if text.lower() == "max" or text.endswith("%") else float(text)


def main() -> None:
    """Load the network and the images, measure, print the table and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="cifar10:../shared/datasets/cifar10-binary-lossless.tar.gz")
    ap.add_argument("--weights", type=Path, help="a zoo run folder or weights file (default: third-party)")
    ap.add_argument("--model", default="resnet20", help="zoo model of --weights when it is a plain file")
    ap.add_argument("--name", help="network name in the output (default: from --weights)")
    ap.add_argument("--images", type=int, default=1000, help="the first N test images")
    ap.add_argument("--calibration", type=int, default=1000, help="the first N training images")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--max-steps", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="JSON (default docs/results/spikingjelly-NAME.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.weights is None:
        from benchmarks.thirdparty import load_resnet20

        model, name = load_resnet20(), args.name or "thirdparty-resnet20"
    else:
        model = load_trained(args.weights, None if args.weights.is_dir() else args.model).model
        name = args.name or (args.weights.name if args.weights.is_dir() else args.weights.parent.name)
    train, test = open_dataset(args.data, "train"), open_dataset(args.data, "test")
    steps = [t for t in STEPS if t < args.max_steps] + [args.max_steps]
    modes = [_mode(m) for m in args.modes.split(",")]
    out = args.out or Path("docs/results") / f"spikingjelly-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    kept: list[dict[str, Any]] = []

    def write(report: dict[str, Any]) -> None:
        report |= {"network": name, "data": args.data, "threads": args.threads}
        report["seconds"] = round(time.perf_counter() - start, 1)
        if len(report["runs"]) == len(steps):  # the first mode: what an earlier run measured is known now
            kept.extend(_kept(out, report, [str(m) for m in modes], steps))
        out.write_text(json.dumps({**report, "runs": kept + report["runs"]}, indent=1) + "\n")
        print(f"{report['runs'][-1]['mode']}: wrote {out} after {report['seconds']} s", flush=True)

    report = measure(
        model,
        to_float(train.images[: args.calibration]),
        to_float(test.images[: args.images]),
        test.labels[: args.images],
        modes,
        steps,
        args.batch_size,
        write,
    )
    print(table({**report, "runs": kept + report["runs"]}))


def _kept(out: Path, report: dict[str, Any], modes: list[str], steps: list[int]) -> list[dict[str, Any]]:
    """The rows of other modes in an earlier ``out`` of the same network, data, images and step counts."""
    if not out.exists():
        return []
    earlier = json.loads(out.read_text())
    keys = ("network", "data", "calibration_images", "ann")
    if [earlier.get(k) for k in keys] != [report[k] for k in keys]:
        return []
    if sorted({r["timesteps"] for r in earlier["runs"]}) != steps:
        return []
    return [r for r in earlier["runs"] if r["mode"] not in modes]


if __name__ == "__main__":
    main()
