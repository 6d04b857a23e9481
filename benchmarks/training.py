"""Training throughput of the zoo ResNet-20: bf16 autocast vs fp32, one real training epoch each.

    python -m benchmarks.training [--images 4096] [--repeats 3] [--device cpu] [--json]

Each repeat trains a fresh model for one epoch of ``--images`` synthetic 32x32 images with the project's
training loop (augmentation, nesterov SGD, channels-last), once with ``amp`` and once without, interleaved
in alternating order after a warm-up of each; the medians and their ratio are printed. bf16 applies where
the device computes it natively (CUDA, CPUs with AVX512-BF16 or AMX); elsewhere both rows are fp32 and the
ratio is about 1.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from converter.cli.train import torch_device
from converter.training.datasets import ImageDataset, synthetic_dataset
from converter.training.models import build_model
from converter.training.train import native_bf16, train


def images_per_s(amp: bool, data: tuple[ImageDataset, ImageDataset], device: str) -> float:
    """Images/s of one training epoch of a fresh ResNet-20 (``amp``: bf16 autocast where native)."""
    torch.manual_seed(0)
    result = train(build_model("resnet20"), *data, epochs=1, warmup_epochs=0, device=device, amp=amp,
                   log=lambda _: None)  # fmt: skip
    return result["history"][-1]["images_per_s"]


def main() -> None:
    """Measure and print images/s and the bf16/fp32 ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (cuda when available)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.device = str(torch_device(args.device))
    data = (synthetic_dataset(args.images, 10), synthetic_dataset(256, 10, split="test"))
    precisions = {"bf16": True, "fp32": False}
    for amp in precisions.values():  # warm-up: oneDNN picks its kernels for each precision
        images_per_s(amp, data, args.device)
    rates: dict[str, list[float]] = {name: [] for name in precisions}
    for repeat in range(args.repeats):
        for name in sorted(precisions, reverse=repeat % 2 == 1):  # alternate which runs first
            rates[name].append(images_per_s(precisions[name], data, args.device))
    median = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "device": args.device,
        "native_bf16": native_bf16(torch.device(args.device)),
        "threads": torch.get_num_threads(),
        "images_per_s": {k: round(v, 1) for k, v in median.items()},
        "bf16_speedup": round(median["bf16"] / median["fp32"], 2),
    }
    if args.json:
        print(json.dumps(result))
        return
    where = f"{args.device}, {result['threads']} threads"
    print(f"ResNet-20 training on {where}, native bf16: {result['native_bf16']}")
    for name, rate in median.items():
        print(f"  {name:<5} {rate:8.1f} images/s")
    print(f"bf16 autocast trains {result['bf16_speedup']:.2f}x as many images/s as fp32")


if __name__ == "__main__":
    main()
