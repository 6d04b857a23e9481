"""Engine throughput on ResNet-20: plain ANN forward vs the fast engine (with counting) vs the stepped engine.

    python -m benchmarks.engines [--batch 256] [--T 16] [--repeats 5]

Runs are interleaved and the median of each is reported, so the ratios hold on a noisy machine. Uses the
third-party ResNet-20 when the shared folder has it (the model users bring), else the zoo ResNet-20.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from benchmarks.thirdparty import CHECKPOINT, load_resnet20
from converter import convert
from converter.training.models import build_model


def _model() -> tuple[torch.nn.Module, str]:
    if CHECKPOINT.exists():
        return load_resnet20(), "third-party ResNet-20"
    return build_model("resnet20").eval(), "zoo ResNet-20 (random weights)"


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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
    x = torch.rand(args.batch, 3, 32, 32)
    net = convert(model, x[:128], T=args.T)
    small = x[: args.stepped_batch]
    runs: dict[str, tuple[Callable[[], object], int]] = {
        "ann (nn.Module forward)": (lambda: model(x), args.batch),
        "fast engine + counts": (lambda: net.run(x), args.batch),
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
        "T": args.T,
        "timesteps": net.timesteps,
        "threads": torch.get_num_threads(),
        "images_per_s": {k: round(v, 1) for k, v in rate.items()},
        "fast_cost_vs_ann": round(ann / rate["fast engine + counts"], 3),
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
    print(f"fast engine costs {result['fast_cost_vs_ann']:.2f}x the ANN forward (target <= 1.3x)")


if __name__ == "__main__":
    main()
