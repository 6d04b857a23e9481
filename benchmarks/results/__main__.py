"""Measure the paper's tables on our models and render ``docs/results.md`` with its plots.

    python -m benchmarks.results --data cifar10:PATH                               # missing sweeps, render
    python -m benchmarks.results --data cifar10:PATH --only thirdparty-resnet20    # one sweep (again), render
    python -m benchmarks.results --render-only                                     # JSON -> markdown + PNG

``PATH`` is the original CIFAR-10 (``../shared/datasets/cifar10-binary-lossless.tar.gz``).

Training runs are read from ``$TSC_RUNS`` (default ``models/zoo``, the Makefile's ``RUNS``).

Each measurement is a ``python -m converter sweep`` whose JSON lands in ``docs/results/`` together with
what its training run reached (``state.json``, ``model.json``) and the machine it ran on; the markdown and
plots are generated from those files only, never typed by hand.
"""

from __future__ import annotations

import argparse

from benchmarks.results.measure import measure
from benchmarks.results.page import render


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
