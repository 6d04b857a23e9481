"""Dataset specs for the command line: ``kind:argument`` strings, or a bare path that is autodetected."""

from __future__ import annotations

from pathlib import Path

from converter.progress import stage
from converter.training.datasets.base import DatasetError, ImageDataset
from converter.training.datasets.cifar import LAYOUTS, download_cifar, load_cifar
from converter.training.datasets.imagefolder import load_image_folder
from converter.training.datasets.synthetic import synthetic_dataset

SPLITS = ("train", "test")
_KINDS = ("imagefolder", "cifar10", "cifar100", "cifar10-download", "cifar100-download", "synthetic")
SPEC_HELP = (
    "imagefolder:DIR (DIR/<class>/*.jpg, or DIR/train and DIR/test (or DIR/val) holding such trees), "
    "cifar10:PATH or cifar100:PATH (official archive or extracted folder), cifar10-download:CACHE_DIR, "
    "cifar100-download:CACHE_DIR, synthetic:classes=10,n=512,size=32[,test_n=128,seed=0], or a bare path"
)


def open_dataset(
    spec: str,
    split: str = "train",
    *,
    size: int | None = None,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    verify: bool = True,
) -> ImageDataset:
    """Load the ``split`` ("train" or "test") of the dataset a spec names; ``size`` resizes folder images."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    with stage(f"loading the {split} images of {spec}"):
        return _open(spec, split, size, cache_dir, workers, verify)


def _open(
    spec: str, split: str, size: int | None, cache_dir: str | Path | None, workers: int | None, verify: bool
) -> ImageDataset:
    """``open_dataset`` once the split is known good."""
    kind, sep, arg = spec.partition(":")
    if not sep or kind not in _KINDS:
        kind, arg = _detect(Path(spec).expanduser()), spec
    if not arg:
        raise DatasetError(f"dataset spec {spec!r} names no path or options; expected {SPEC_HELP}")
    if kind == "synthetic":
        return _synthetic(arg, split)
    path = Path(arg).expanduser()
    if kind == "imagefolder":
        return load_image_folder(_split_folder(path, split), size, cache_dir=cache_dir, workers=workers)
    variant = kind.removesuffix("-download")
    if kind.endswith("-download"):
        path = download_cifar(variant, path)
    return load_cifar(path, split, variant=variant, verify=verify)


def _detect(path: Path) -> str:
    """The kind of a bare path: a CIFAR archive or folder, or an ImageFolder tree."""
    if path.is_file():
        for layout in LAYOUTS:
            if path.name == layout.archive:
                return layout.variant
        raise DatasetError(f"{path}: unrecognised file; expected a CIFAR archive or {SPEC_HELP}")
    if not path.is_dir():
        raise DatasetError(f"{path}: no such file or folder; expected {SPEC_HELP}")
    for layout in LAYOUTS:
        if path.name == layout.folder or (path / layout.folder).is_dir() or (path / layout.archive).is_file():
            return layout.variant
    return "imagefolder"


def _split_folder(root: Path, split: str) -> Path:
    """``root/train`` or ``root/test`` (``root/val``) when the tree is split, else ``root`` itself."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory; expected an ImageFolder tree root/<class>/*.jpg")
    names = ("train",) if split == "train" else ("test", "val")
    has_split = (root / "train").is_dir() and any((root / n).is_dir() for n in ("test", "val"))
    if not has_split:
        return root
    return next(root / n for n in names if (root / n).is_dir())


def _synthetic(arg: str, split: str) -> ImageDataset:
    """Synthetic data from ``classes=10,n=512,size=32[,channels=3,test_n=128,seed=0]``."""
    options = {"classes": 10, "n": 512, "size": 32, "channels": 3, "seed": 0}
    for item in filter(None, arg.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in (*options, "test_n"):
            keys = ", ".join((*options, "test_n"))
            raise DatasetError(f"synthetic option {item!r} unknown; expected key=value with keys {keys}")
        try:
            options[key] = int(value)
        except ValueError:
            raise DatasetError(f"synthetic option {key}={value!r} is not an integer") from None
    n = options["n"] if split == "train" else options.get("test_n", max(1, options["n"] // 4))
    shape = (options["channels"], options["size"], options["size"])
    return synthetic_dataset(n, options["classes"], shape, seed=options["seed"], split=split)
