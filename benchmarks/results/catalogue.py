"""What the report measures: where its files live, the sweeps, the earlier JPEG measurements, the paper."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

DOCS = Path("docs")
RESULTS = DOCS / "results"
RUNS = Path(os.environ.get("TSC_RUNS", "models/zoo")).expanduser()  # training runs, committed (Makefile RUNS)
DEFAULT_MODEL = Path("models/resnet20-cifar10")  # the embedded default model: its spike raster is drawn
RATE = ("--rate-steps", "32,64,128,256", "--rate-images", "1000", "--rate-v0", "0,0.5")
THIRD_PARTY = ("--factory", "benchmarks.thirdparty:load_resnet20")
# the best ResNet-20 trained here (make train-resnet20, which names it in TSC_RESNET20): the clip-floor rows
# start from it
RESNET20 = Path(os.environ.get("TSC_RESNET20", RUNS / "resnet20-e120")).expanduser()
LATENCIES = ("--T", "latency:64,latency:128,latency:256,latency:512", "--methods", "error-aware")

# spec section 9: the paper's numbers (ECCV 2020, CIFAR-10) for the tables; "latency": TSC % at those steps
PAPER = {
    "resnet20": {
        "ann": 91.47,
        "tsc": "69.38 at 64 steps, 91.42 at 512",
        "rate": "RMP-SNN 91.36 at >= 512",
        "latency": {64: 69.38, 512: 91.42},
    },
    "vgg16": {
        "ann": 93.63,
        "tsc": "92.79 at 64 steps, 93.63 at 512",
        "rate": "RMP-SNN 93.63 at >= 512",
        "latency": {64: 92.79, 512: 93.63},
    },
}
PAPER_LATENCIES = (64, 128, 256, 512)  # the total timesteps the paper's table reports
FAMILIES = {
    "thirdparty": "ResNet-20, third-party weights (converted unmodified, or low-T fine-tuned here)",
    "resnet20": "ResNet-20 trained here",
}

# facts about a training run, formatted with a report whose "training" record holds them
EPOCHS = "{training[epochs]} epochs"
CLIP_FLOOR = "clip-floor T={training[clip_floor][T]} (input {training[clip_floor][input_T]})"
FROM = "from {training[init]}"


def clip_floor_run(base: Path, t: int, t_in: int) -> Path:
    """The run ``make lossless-resnet20 T=t T_IN=t_in`` trains from ``base`` (Makefile naming)."""
    return RUNS / f"{base.name}-cf{t}-in{t_in}"


def family(stem: str) -> str:
    """The model a measurement belongs to (its key in ``FAMILIES``): its runs are compared together."""
    return "thirdparty" if stem.startswith("thirdparty") else "resnet20"


class Measurement(NamedTuple):
    """One section of the report: a JSON file in ``docs/results/`` and how to title it."""

    stem: str
    title: str
    paper: str  # key of PAPER
    argv: tuple[str, ...] = ()  # sweep arguments after --data; none: kept, not remeasured
    facts: str = ""  # appended to the title, formatted with the report (``str.format`` fields)
    training: Path | None = None  # a manifest whose provenance records the training (JPEG sections)


# what is measured on the original CIFAR-10
MEASUREMENTS = [
    Measurement(
        "thirdparty-resnet20",
        "Third-party ResNet-20 (trained elsewhere on the original CIFAR-10), converted unmodified",
        "resnet20",
        (*THIRD_PARTY, "--T", "4,8,12,16,32", "--methods", "percentile:99.99", *RATE),
    ),
    Measurement(
        "thirdparty-resnet20-error-aware",
        "Third-party ResNet-20, error-aware calibration and window allocation (budget 1 point)",
        "resnet20",
        (*THIRD_PARTY, "--T", "4,8,12,16,auto", "--methods", "error-aware", "--max-drop", "1.0"),
    ),
    Measurement(
        "thirdparty-resnet20-latency",
        "Third-party ResNet-20 at the paper's latencies, error-aware calibration, windows for each latency",
        "resnet20",
        (*THIRD_PARTY, *LATENCIES),
    ),
    Measurement(
        "thirdparty-resnet20-auto-0.1",
        "Third-party ResNet-20, window allocation with a budget of 0.1 point",
        "resnet20",
        (*THIRD_PARTY, "--T", "auto", "--methods", "error-aware", "--max-drop", "0.1"),
    ),
    Measurement(
        "thirdparty-resnet20-cf4",
        "Third-party ResNet-20 after low-T training here",
        "resnet20",
        ("--run", str(RUNS / "thirdparty-cf4-in8"), "--T", "trained", "--methods", "max"),
        f": {CLIP_FLOOR}, learnable thresholds, {EPOCHS}",
    ),
    Measurement(
        "resnet20",
        "ResNet-20 trained here from scratch",
        "resnet20",
        ("--run", str(RESNET20), "--T", "8,16,32", "--methods", "percentile:99.99", *RATE),
        " ({training[recipe]}, label smoothing {training[label_smoothing]:g})",
    ),
    Measurement(
        "resnet20-latency",
        "ResNet-20 trained here at the paper's latencies, error-aware calibration, windows for each latency",
        "resnet20",
        ("--run", str(RESNET20), *LATENCIES),
    ),
    *(
        Measurement(
            f"resnet20-cf{t}",
            f"ResNet-20 trained here, clip-floor trained for {purpose}",
            "resnet20",
            ("--run", str(clip_floor_run(RESNET20, t, t_in)), "--T", "trained", "--methods", "max"),
            f": {CLIP_FLOOR}, {EPOCHS} {FROM}",
        )
        for t, t_in, purpose in (
            (16, 16, "the default model's windows"),
            (3, 7, "64 steps"),
            (4, 8, "84 steps"),
            (6, 14, "128 steps"),
            (12, 28, "256 steps"),
            (25, 37, "512 steps"),
        )
    ),
]
# earlier, on the JPEG copy (about 10 points below the original for the same model), in docs/results/jpeg/
JPEG_MEASUREMENTS = [
    Measurement("resnet20", "ResNet-20 trained here on the JPEG copy", "resnet20"),
    Measurement("resnet20-cf8", "the same, clip-floor fine-tuned for T=8", "resnet20"),
    Measurement("resnet20-cf16", "the same, clip-floor fine-tuned for T=16", "resnet20"),
    Measurement(
        "vgg16",
        "VGG-16 trained here on the JPEG copy",
        "vgg16",
        facts=" (GPU, {training[epochs]} of {training[planned_epochs]} epochs)",
        training=RESULTS / "vgg16-cifar10.manifest.json",
    ),
    Measurement("vgg16-rate200", "VGG-16 again", "vgg16", facts=", rate-coded on {rate[0][images]} images"),
    Measurement("thirdparty-resnet20", "Third-party ResNet-20 on the JPEG copy", "resnet20"),
]
