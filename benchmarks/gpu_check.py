"""The GPU check: the default model on CUDA against the CPU, same answers, and throughput of both.

    python -m benchmarks.gpu_check [--images 512] [--precision float64|float32]

Runs the fast engine (and the stepped engine on a few images) on the CPU and on CUDA over the same
original CIFAR-10 test images; prints whether counts are identical and logits agree within float
tolerance, and images/s on each device with their ratio. Without a CUDA device it says so and exits 0.
"""

from __future__ import annotations

import argparse
import time

import torch

from converter import load
from converter.training.datasets import open_dataset, to_float

DATA = "cifar10:../shared/datasets/cifar10-binary-lossless.tar.gz"


def _timed(fn: object, *args: object) -> tuple[object, float]:
    """``fn(*args)`` and its wall time in seconds (CUDA synchronised)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn(*args)  # type: ignore[operator]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> int:
    """Compare CPU and CUDA; 1 when their answers differ."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="models/resnet20-cifar10")
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--stepped-images", type=int, default=16)
    parser.add_argument("--precision", choices=("float64", "float32"), default="float64")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    x = to_float(open_dataset(args.data, "test").images[: args.images])
    dtype = getattr(torch, args.precision)
    cpu, gpu = load(args.model).to(dtype), load(args.model).to(dtype, "cuda")
    gpu.run(x[:8])  # warm-up: kernels, plans
    same = True
    for engine, n in (("fast", args.images), ("stepped", args.stepped_images)):
        a, t_cpu = _timed(cpu.run, x[:n], engine)
        b, t_gpu = _timed(gpu.run, x[:n], engine)
        counts = torch.equal(a.spikes, b.spikes.cpu()) and torch.equal(
            a.synaptic_additions, b.synaptic_additions.cpu()
        )
        close = torch.allclose(a.logits, b.logits.cpu(), rtol=1e-5, atol=1e-6)
        same &= counts and close
        print(
            f"{engine:8s} {n:5d} images  counts identical: {counts}  logits close: {close}  "
            f"cpu {n / t_cpu:8.1f} img/s  cuda {n / t_gpu:8.1f} img/s  ratio {t_cpu / t_gpu:5.1f}x"
        )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
