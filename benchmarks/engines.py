"""Engine throughput on ResNet-20: ANN forward vs the fast engine (float32 guarded, float64), raw, stepped.

    python -m benchmarks.engines [--batch 256] [--T 16] [--repeats 5]

Runs are interleaved and the median of each is reported, so the ratios hold on a noisy machine. Uses the
third-party ResNet-20 when the shared folder has it (the model users bring), else the zoo ResNet-20.
The fast engine gives float64's levels in either precision (float32 with its rounding guard); the raw engine
in float32 approximates them: the share of images on which its durations (and top-1) differ from float64's,
and the guarded engine's (which must be zero), are reported with the timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from benchmarks.thirdparty import CHECKPOINT, SHARED, load_resnet20
from converter import convert
from converter.training.datasets import open_dataset, to_float
from converter.training.models import build_model


def _model() -> tuple[torch.nn.Module, str]:
    if CHECKPOINT.exists():
        return load_resnet20(), "third-party ResNet-20"
    return build_model("resnet20").eval(), "zoo ResNet-20 (random weights)"


def _images(n: int) -> tuple[torch.Tensor, str]:
    """The first ``n`` original CIFAR-10 test images when the shared archive is here, else random pixels."""
    archive = SHARED / "datasets" / "cifar10-binary-lossless.tar.gz"
    if archive.is_file():
        return to_float(open_dataset(f"cifar10:{archive}", "test").images[:n]), "CIFAR-10 test images"
    return torch.rand(n, 3, 32, 32), "random pixels"


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _disagreement(net32: object, net64: object, x: torch.Tensor, engine: str) -> dict[str, float]:
    """How far ``engine``'s float32 answers are from float64's (the spec's levels) on the images ``x``."""
    a = net32.run(x, engine, keep_durations=True)
    b = net64.run(x, keep_durations=True)
    differs = torch.zeros(x.shape[0], dtype=torch.bool)
    neurons = changed = 0
    for name, d in a.durations.items():
        diff = (d.double() != b.durations[name]).flatten(1)
        differs |= diff.any(1)
        changed += int(diff.sum())
        neurons += diff.numel()
    return {
        "images_with_other_durations": round(float(differs.double().mean()), 4),
        "images_with_other_top1": round(float((a.logits.argmax(1) != b.logits.argmax(1)).double().mean()), 4),
        "neurons_with_other_durations": changed / neurons,
    }


def main() -> None:
    """Measure and print images/s and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--T", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stepped-batch", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, label = _model()
    x, images = _images(args.batch)
    net = convert(model, x[:128], T=args.T)
    small = x[: args.stepped_batch]
    net64 = net.to(torch.float64)
    runs: dict[str, tuple[Callable[[], object], int]] = {
        "ann (nn.Module forward)": (lambda: model(x), args.batch),
        "raw engine, float32": (lambda: net.run(x, "raw"), args.batch),
        "fast engine, float64": (lambda: net64.run(x), args.batch),
        "fast engine, float32 (guarded)": (lambda: net.run(x), args.batch),
        "stepped engine": (lambda: net.run(small, "stepped"), args.stepped_batch),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for fn, _ in runs.values():
            fn()  # warm-up
        for _ in range(args.repeats):
            for name, (fn, _) in runs.items():
                times[name].append(_time(fn))
    rate = {name: runs[name][1] / statistics.median(ts) for name, ts in times.items()}
    ann = rate["ann (nn.Module forward)"]
    result = {
        "model": label,
        "images": images,
        "T": args.T,
        "timesteps": net.timesteps,
        "threads": torch.get_num_threads(),
        "images_per_s": {k: round(v, 1) for k, v in rate.items()},
        "fast_cost_vs_ann": round(ann / rate["fast engine, float32 (guarded)"], 3),
        "raw_cost_vs_ann": round(ann / rate["raw engine, float32"], 3),
        "fast_float64_cost_vs_ann": round(ann / rate["fast engine, float64"], 3),
        "fast_float32_vs_float64": _disagreement(net, net64, x, "fast"),
        "raw_float32_vs_float64": _disagreement(net, net64, x, "raw"),
        "stepped_cost_vs_ann": round(ann / rate["stepped engine"], 1),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{label}, T={args.T} ({net.timesteps} steps), batch {args.batch}, {torch.get_num_threads()} threads"
    )
    for name, r in rate.items():
        print(f"  {name:<26} {r:10.1f} images/s   cost x{ann / r:6.2f} of the ANN forward")
    print(
        f"fast engine (float32, guarded) costs {result['fast_cost_vs_ann']:.2f}x the ANN forward (target "
        f"<= 1.5x); raw float32 {result['raw_cost_vs_ann']:.2f}x, fast float64 "
        f"{result['fast_float64_cost_vs_ann']:.2f}x"
    )
    for engine in ("fast", "raw"):
        agree = result[f"{engine}_float32_vs_float64"]
        print(
            f"{engine} float32 vs float64 on {args.batch} {images}: other durations on "
            f"{100 * agree['images_with_other_durations']:.1f}% of images "
            f"({agree['neurons_with_other_durations']:.2e} of neurons), other top-1 on "
            f"{100 * agree['images_with_other_top1']:.1f}%"
        )


if __name__ == "__main__":
    main()
