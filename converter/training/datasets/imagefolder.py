"""ImageFolder trees (``root/<class>/*.jpg``) decoded with Pillow, in parallel, with an optional cache."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from converter.snn.system import atomic_write, available_cores
from converter.training.datasets.base import DatasetError, ImageDataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CROP_FRACTION = 0.875  # resize to size / 0.875 (256 for 224), then centre-crop size
POOL_THRESHOLD = 2000  # decode in worker processes from this many files on
_CHUNK = 500
_CACHE_VERSION = "1"


def find_images(root: str | Path) -> tuple[list[str], list[tuple[str, int]]]:
    """The sorted class names under ``root`` and every image file (sorted) with its class index."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory; expected an ImageFolder tree root/<class>/*.jpg")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{root}: no class folders; expected an ImageFolder tree root/<class>/*.jpg")
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        files = sorted(
            os.path.join(dirpath, f)
            for dirpath, _, filenames in os.walk(root / name, followlinks=True)
            for f in filenames
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
        )
        if not files:
            raise DatasetError(f"{root / name}: class folder holds no {'/'.join(IMAGE_EXTENSIONS)} images")
        samples.extend((f, label) for f in files)
    return classes, samples


def decode_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """One image as RGB uint8 [3, H, W]; with ``size``, resized (shorter side) and centre-cropped to it."""
    try:
        with Image.open(path) as img:
            if size is not None and img.size != (size, size):
                short = round(size / CROP_FRACTION)
                img.draft("RGB", (short, short))
                w, h = img.size
                scale = short / min(w, h)
                new_w, new_h = max(short, round(w * scale)), max(short, round(h * scale))
                left, top = (new_w - size) // 2, (new_h - size) // 2
                img = img.convert("RGB").resize((new_w, new_h), Image.Resampling.BILINEAR)
                img = img.crop((left, top, left + size, top + size))
            return np.asarray(img.convert("RGB")).transpose(2, 0, 1)
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc})") from None


def _decode_chunk(job: tuple[list[str], int | None]) -> np.ndarray:
    """Decode a list of same-sized images into one [n, 3, H, W] array."""
    paths, size = job
    first = decode_image(paths[0], size)
    out = np.empty((len(paths), *first.shape), dtype=np.uint8)
    out[0] = first
    for i, path in enumerate(paths[1:], start=1):
        image = decode_image(path, size)
        if image.shape != first.shape:
            raise DatasetError(
                f"{path}: image is {image.shape[2]}x{image.shape[1]} but {paths[0]} is "
                f"{first.shape[2]}x{first.shape[1]}; pass a size to resize them all"
            )
        out[i] = image
    return out


def _decoded_chunks(jobs: list[tuple[list[str], int | None]], workers: int) -> Iterator[np.ndarray]:
    """Decode the jobs in order, in ``workers`` processes when there are many files."""
    if workers > 1 and sum(len(paths) for paths, _ in jobs) >= POOL_THRESHOLD:
        with multiprocessing.get_context().Pool(workers) as pool:
            yield from pool.imap(_decode_chunk, jobs)
    else:
        yield from map(_decode_chunk, jobs)


def _decode_all(paths: list[str], size: int | None, workers: int) -> np.ndarray:
    """Decode every path (at least one) into one [N, 3, H, W] array."""
    jobs = [(paths[i : i + _CHUNK], size) for i in range(0, len(paths), _CHUNK)]
    chunks = _decoded_chunks(jobs, workers)
    first = next(chunks)
    out = np.empty((len(paths), *first.shape[1:]), dtype=np.uint8)
    out[: len(first)] = first
    for start, chunk in zip(range(_CHUNK, len(paths), _CHUNK), chunks, strict=True):
        if chunk.shape[1:] != first.shape[1:]:
            raise DatasetError(
                f"{paths[start]}: image is {chunk.shape[3]}x{chunk.shape[2]} but {paths[0]} is "
                f"{first.shape[3]}x{first.shape[2]}; pass a size to resize them all"
            )
        out[start : start + len(chunk)] = chunk
    return out


def _cache_key(root: Path, samples: list[tuple[str, int]], size: int | None) -> str:
    """A digest of the root path, the requested size and every file's path, mtime and byte size."""
    digest = hashlib.sha256(f"{_CACHE_VERSION}\0{root.resolve()}\0{size}".encode())
    prefix = len(str(root)) + 1
    for path, label in samples:
        stat = os.stat(path)
        digest.update(f"\0{path[prefix:]}\0{label}\0{stat.st_mtime_ns}\0{stat.st_size}".encode())
    return digest.hexdigest()[:32]


def _read_cache(path: Path, count: int) -> np.ndarray | None:
    """The cached array if present and holding ``count`` images, else None."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    ok = array.dtype == np.uint8 and array.ndim == 4 and array.shape[0] == count
    return array if ok else None


def _write_cache(path: Path, array: np.ndarray) -> None:
    """Save ``array`` as .npy, atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a bare name
            np.save(f, array, allow_pickle=False)

    atomic_write(path, write)


def default_workers() -> int:
    """How many decoding processes to use: the CPUs this process may run on, at most 16."""
    return min(16, available_cores())


def load_image_folder(
    root: str | Path,
    size: int | None = None,
    *,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
) -> ImageDataset:
    """Decode an ImageFolder tree into memory; ``cache_dir`` keeps decoded pixels as .npy for next time."""
    root = Path(root)
    classes, samples = find_images(root)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"imagefolder-{_cache_key(root, samples, size)}.npy"
    array = _read_cache(cache, len(samples)) if cache is not None else None
    if array is None:
        array = _decode_all([p for p, _ in samples], size, workers or default_workers())
        if cache is not None:
            _write_cache(cache, array)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return ImageDataset(torch.from_numpy(array), labels, classes)
