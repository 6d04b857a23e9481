"""The official CIFAR-10 / CIFAR-100 archives (python and binary versions), packed or extracted."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from converter.training.datasets.base import DatasetError, ImageDataset

URL_BASE = "https://www.cs.toronto.edu/~kriz/"
_RECORD_PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarLayout:
    """Where one official CIFAR release keeps its batches and class names."""

    variant: str  # "cifar10" | "cifar100"
    fmt: str  # "binary" | "python"
    archive: str
    md5: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: tuple[str, ...]

    def members(self, split: str) -> tuple[str, ...]:
        """The files, relative to the folder, that one split needs."""
        return (*(self.train if split == "train" else self.test), *self.meta)


LAYOUTS = (  # binary first: it needs no unpickling
    CifarLayout(
        "cifar10", "binary", "cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
        "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",),
        ("batches.meta.txt",),
    ),
    CifarLayout(
        "cifar100", "binary", "cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8",
        "cifar-100-binary", ("train.bin",), ("test.bin",), ("fine_label_names.txt", "coarse_label_names.txt"),
    ),
    CifarLayout(
        "cifar10", "python", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
        ("batches.meta",),
    ),
    CifarLayout(
        "cifar100", "python", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python", ("train",), ("test",), ("meta",),
    ),
)  # fmt: skip
OFFICIAL_MD5 = {layout.archive: layout.md5 for layout in LAYOUTS}


def _numpy_reconstruct() -> object:
    """numpy's array unpickling helper, wherever this numpy version keeps it."""
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches: numpy arrays, dicts, lists, strings and ints, and refuses anything else."""

    _BUILTINS: ClassVar[dict[str, type]] = {t.__name__: t for t in (dict, list, bytes, str, int)}

    def find_class(self, module: str, name: str) -> object:
        """Resolve only the globals a CIFAR batch references."""
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _numpy_reconstruct()
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module == "builtins" and name in self._BUILTINS:
            return self._BUILTINS[name]
        raise DatasetError(
            f"refusing to unpickle {module}.{name}: a CIFAR batch holds only numpy arrays, dicts and lists"
        )


def unpickle_batch(data: bytes, name: str) -> dict:
    """One CIFAR python batch (a dict) from its pickled bytes, through the restricted unpickler."""
    try:
        batch = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except DatasetError as exc:
        raise DatasetError(f"{name}: {exc}") from None
    except Exception as exc:
        raise DatasetError(f"{name}: not a CIFAR python batch ({exc})") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{name}: not a CIFAR python batch (holds {type(batch).__name__}, not dict)")
    return batch


def file_md5(path: str | Path) -> str:
    """The md5 hex digest of a file."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_archive(path: Path) -> None:
    """Check an archive bearing an official name against the official md5."""
    expected = OFFICIAL_MD5.get(path.name)
    if expected is not None and (actual := file_md5(path)) != expected:
        raise DatasetError(
            f"{path}: md5 {actual} differs from the official {expected}; the archive is corrupt or altered"
        )


def _read_archive(path: Path, layouts: list[CifarLayout], split: str) -> tuple[CifarLayout, dict[str, bytes]]:
    """Read, in one pass, the members of the first layout the archive holds completely."""
    wanted = {f"{layout.folder}/{m}": (layout, m) for layout in layouts for m in layout.members(split)}
    found: dict[CifarLayout, dict[str, bytes]] = {}
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                hit = wanted.get(member.name.removeprefix("./"))
                if hit is not None and member.isfile():
                    found.setdefault(hit[0], {})[hit[1]] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable CIFAR tar archive ({exc})") from None
    for layout in layouts:
        if len(found.get(layout, {})) == len(layout.members(split)):
            return layout, found[layout]
    raise DatasetError(f"{path}: archive lacks the CIFAR {split} batches; expected {_expected(layouts)}")


def _read_folder(folder: Path, layout: CifarLayout, split: str) -> dict[str, bytes]:
    """The members of one split from an extracted folder."""
    missing = [m for m in layout.members(split) if not (folder / m).is_file()]
    if missing:
        raise DatasetError(f"{folder}: extracted {layout.variant} folder lacks {', '.join(missing)}")
    return {m: (folder / m).read_bytes() for m in layout.members(split)}


def _expected(layouts: list[CifarLayout]) -> str:
    """Human-readable list of the archives and folders that would do."""
    return "one of " + ", ".join(sorted({x for lay in layouts for x in (lay.archive, lay.folder + "/")}))


def _locate(path: Path, layouts: list[CifarLayout], split: str) -> tuple[CifarLayout, dict[str, bytes], Path]:
    """Find CIFAR data at ``path``: an archive, an extracted folder, or a folder holding either."""
    if path.is_dir():
        for layout in layouts:
            for folder in (path, path / layout.folder):
                if folder.name == layout.folder and (folder / layout.meta[0]).is_file():
                    return layout, _read_folder(folder, layout, split), folder
        for layout in layouts:
            if (path / layout.archive).is_file():
                path = path / layout.archive
                break
        else:
            raise DatasetError(f"{path}: no CIFAR data in this folder; expected {_expected(layouts)}")
    if not path.is_file():
        raise DatasetError(f"{path}: no such file or folder; expected {_expected(layouts)}")
    layout, blobs = _read_archive(path, layouts, split)
    return layout, blobs, path


def _parse_python(layout: CifarLayout, blobs: dict[str, bytes], split: str, labels: str) -> ImageDataset:
    """Images, labels and class names from unpickled python batches."""
    meta = unpickle_batch(blobs[layout.meta[0]], layout.meta[0])
    key = "labels" if layout.variant == "cifar10" else f"{labels}_labels"
    names_key = "label_names" if layout.variant == "cifar10" else f"{labels}_label_names"
    parts, targets = [], []
    for member in layout.train if split == "train" else layout.test:
        batch = unpickle_batch(blobs[member], member)
        data = batch.get("data")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (_RECORD_PIXELS,):
            raise DatasetError(f"{member}: 'data' is not a uint8 [N, 3072] array")
        if len(batch.get(key, ())) != len(data):
            raise DatasetError(f"{member}: '{key}' does not hold one label per image")
        parts.append(data)
        targets.extend(batch[key])
    classes = [str(c) for c in meta.get(names_key, [])]
    return _assemble(np.concatenate(parts), np.asarray(targets, dtype=np.int64), classes, layout)


def _parse_binary(layout: CifarLayout, blobs: dict[str, bytes], split: str, labels: str) -> ImageDataset:
    """Images, labels and class names from binary batches (label byte(s), then 3072 pixel bytes)."""
    label_bytes = 1 if layout.variant == "cifar10" else 2
    column = 0 if layout.variant == "cifar10" or labels == "coarse" else 1
    record = label_bytes + _RECORD_PIXELS
    parts = []
    for member in layout.train if split == "train" else layout.test:
        raw = np.frombuffer(blobs[member], dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise DatasetError(f"{member}: size {raw.size} is not a whole number of {record}-byte records")
        parts.append(raw.reshape(-1, record))
    rows = np.concatenate(parts)
    names = layout.meta[0] if layout.variant == "cifar10" or labels == "fine" else layout.meta[1]
    classes = [line.strip() for line in blobs[names].decode("utf-8", "replace").splitlines() if line.strip()]
    return _assemble(rows[:, label_bytes:], rows[:, column].astype(np.int64), classes, layout)


def _assemble(data: np.ndarray, targets: np.ndarray, classes: list[str], layout: CifarLayout) -> ImageDataset:
    """Check labels against the class list and shape pixels to [N, 3, 32, 32]."""
    if not classes:
        raise DatasetError(f"{layout.variant}: the class-name file lists no classes")
    if targets.size and (targets.min() < 0 or targets.max() >= len(classes)):
        raise DatasetError(f"{layout.variant}: labels fall outside the {len(classes)} listed classes")
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32))
    return ImageDataset(images, torch.from_numpy(np.ascontiguousarray(targets)), classes)


def load_cifar(
    path: str | Path,
    split: str = "train",
    *,
    variant: str | None = None,
    labels: str = "fine",
    verify: bool = True,
) -> ImageDataset:
    """CIFAR-10/100 from an official archive or its extracted folder; ``verify`` checks official md5s."""
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r}; expected 'train' or 'test'")
    if labels not in ("fine", "coarse"):
        raise DatasetError(f"unknown CIFAR-100 label kind {labels!r}; expected 'fine' or 'coarse'")
    layouts = [layout for layout in LAYOUTS if variant in (None, layout.variant)]
    if not layouts:
        raise DatasetError(f"unknown CIFAR variant {variant!r}; expected 'cifar10' or 'cifar100'")
    path = Path(path)
    layout, blobs, source = _locate(path, layouts, split)
    if verify and source.is_file():
        verify_archive(source)
    parse = _parse_binary if layout.fmt == "binary" else _parse_python
    return parse(layout, blobs, split, labels)


def download_cifar(variant: str, cache_dir: str | Path, *, timeout: float = 60.0) -> Path:
    """The official binary archive of ``variant`` in ``cache_dir``, downloaded and md5-checked if missing."""
    layout = next((x for x in LAYOUTS if x.variant == variant and x.fmt == "binary"), None)
    if layout is None:
        raise DatasetError(f"unknown CIFAR variant {variant!r}; expected 'cifar10' or 'cifar100'")
    target = Path(cache_dir) / layout.archive
    if target.is_file() and file_md5(target) == layout.md5:
        return target
    url = URL_BASE + layout.archive
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise DatasetError(
            f"cannot download {url} ({exc}); fetch it by hand and pass {variant}:/path/to/{layout.archive}"
        ) from None
    if (actual := file_md5(tmp)) != layout.md5:
        tmp.unlink()
        raise DatasetError(f"{url}: downloaded file has md5 {actual}, expected {layout.md5}")
    os.replace(tmp, target)
    return target
