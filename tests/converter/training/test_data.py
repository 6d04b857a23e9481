"""Datasets: synthetic, ImageFolder (cache, worker pool), CIFAR archives (both formats), specs, transforms."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import re
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.thirdparty import SHARED
from converter.training.datasets import (
    DatasetError,
    ImageDataset,
    download_cifar,
    load_cifar,
    load_image_folder,
    open_dataset,
    random_crop,
    random_flip,
    synthetic_dataset,
    to_float,
)
from converter.training.datasets import cifar as cifar_module
from converter.training.datasets import imagefolder as imagefolder_module

LOSSLESS = SHARED / "datasets" / "cifar10-binary-lossless.tar.gz"

# ---------------------------------------------------------------- synthetic


def test_synthetic_shapes_and_determinism():
    a = synthetic_dataset(40, 4, (3, 16, 12), seed=3)
    b = synthetic_dataset(40, 4, (3, 16, 12), seed=3)
    assert a.images.shape == (40, 3, 16, 12) and a.images.dtype == torch.uint8
    assert a.labels.dtype == torch.int64 and a.labels.bincount().tolist() == [10, 10, 10, 10]
    assert a.classes == ["class0", "class1", "class2", "class3"]
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    test = synthetic_dataset(40, 4, (3, 16, 12), seed=3, split="test")
    assert not torch.equal(a.images, test.images)


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(DatasetError):
        synthetic_dataset(0, 4)
    with pytest.raises(DatasetError, match="split"):
        synthetic_dataset(4, 2, split="val")


def test_dataset_subset_and_checks():
    data = synthetic_dataset(30, 3)
    sub = data.subset(10, seed=1)
    assert len(sub) == 10 and sub.classes == data.classes
    assert data.subset(100) is data
    image, label = sub[0]
    assert image.shape == (3, 32, 32) and isinstance(label, int)
    with pytest.raises(DatasetError):
        ImageDataset(data.images.float(), data.labels, data.classes)
    with pytest.raises(DatasetError):
        ImageDataset(data.images, data.labels[:5], data.classes)


# ---------------------------------------------------------------- image folders


def _write_tree(root: Path, classes: dict[str, int], size=(8, 6), fmt="PNG", seed=0) -> dict[str, np.ndarray]:
    """Write ``count`` random images per class; returns the pixels by path (PNG is lossless)."""
    rng = np.random.default_rng(seed)
    written = {}
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            path = root / name / f"{i:04d}.{fmt.lower()}"
            Image.fromarray(pixels).save(path, format=fmt)
            written[str(path)] = pixels
    return written


def test_image_folder_loads_sorted_classes(tmp_path):
    written = _write_tree(tmp_path, {"zebra": 2, "ant": 3})
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    data = load_image_folder(tmp_path)
    assert data.classes == ["ant", "zebra"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1]
    assert data.images.shape == (5, 3, 6, 8)
    first = written[str(tmp_path / "ant" / "0000.png")]
    assert torch.equal(data.images[0], torch.from_numpy(first).permute(2, 0, 1))


def test_image_folder_resizes_and_center_crops(tmp_path):
    _write_tree(tmp_path, {"a": 1}, size=(40, 30), fmt="JPEG")
    Image.new("L", (30, 50), 200).save(tmp_path / "a" / "grey.jpg")  # greyscale becomes RGB
    data = load_image_folder(tmp_path, size=16)
    assert data.images.shape == (2, 3, 16, 16)


def test_image_folder_mixed_sizes_need_a_size(tmp_path):
    _write_tree(tmp_path, {"a": 1}, size=(8, 8))
    _write_tree(tmp_path, {"b": 1}, size=(9, 9))
    with pytest.raises(DatasetError, match="pass a size"):
        load_image_folder(tmp_path)


def test_image_folder_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "missing"))):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no class folders"):
        load_image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no"):
        load_image_folder(tmp_path)
    (tmp_path / "empty" / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"bad\.jpg"):
        load_image_folder(tmp_path)


def test_image_folder_cache_is_used_and_invalidated(tmp_path):
    root = tmp_path / "tree"
    _write_tree(root, {"a": 2, "b": 2})
    cache = tmp_path / "cache"
    first = load_image_folder(root, cache_dir=cache)
    files = list(cache.glob("*.npy"))
    assert len(files) == 1
    saved = np.load(files[0], allow_pickle=False)
    saved[:] = 7  # a changed cache file proves the next load reads it instead of decoding
    np.save(files[0], saved)
    assert bool((load_image_folder(root, cache_dir=cache).images == 7).all())
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / "a" / "0000.png")
    os.utime(root / "a" / "0000.png", ns=(1, 1))
    again = load_image_folder(root, cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 2
    assert int(again.images[0].sum()) == 0 and torch.equal(again.images[1:], first.images[1:])


def test_image_folder_worker_pool_matches_serial(tmp_path, monkeypatch):
    _write_tree(tmp_path, {"a": 5, "b": 4}, fmt="JPEG")
    serial = load_image_folder(tmp_path, workers=1)
    monkeypatch.setattr(imagefolder_module, "POOL_THRESHOLD", 2)
    monkeypatch.setattr(imagefolder_module, "_CHUNK", 2)
    pooled = load_image_folder(tmp_path, workers=2)
    assert torch.equal(serial.images, pooled.images) and torch.equal(serial.labels, pooled.labels)


# ---------------------------------------------------------------- CIFAR archives


def _cifar_arrays(n: int, classes: int, seed: int) -> tuple[np.ndarray, list[int], list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    fine = rng.integers(0, classes, n).tolist()
    coarse = [f % 20 for f in fine]
    return data, fine, coarse


def _pickled(obj: object) -> bytes:
    """A pickle as Python 3 and numpy 2 write it (``numpy._core.multiarray``)."""
    return pickle.dumps(obj, protocol=4)


def _py2_string(value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode("latin1")
    return b"U" + bytes([len(raw)]) + raw if len(raw) < 256 else b"T" + struct.pack("<i", len(raw)) + raw


def _py2_pickled(batch: dict) -> bytes:
    """A dict of str, int lists and uint8 arrays pickled as Python 2 / numpy 1 wrote the official batches."""
    out = b"\x80\x02}("
    for key, value in batch.items():
        out += _py2_string(key)
        if isinstance(value, np.ndarray):
            shape = b"(" + b"".join(b"J" + struct.pack("<i", d) for d in value.shape) + b"t"
            dtype = b"cnumpy\ndtype\n" + _py2_string("u1") + b"K\x00K\x01\x87R(K\x03" + _py2_string("|")
            dtype += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
            out += (
                b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
                + _py2_string("b")
                + b"\x87R"
            )
            out += b"(K\x01" + shape + dtype + b"\x89" + _py2_string(value.tobytes()) + b"tb"
        elif isinstance(value, list):
            items = (b"J" + struct.pack("<i", x) if isinstance(x, int) else _py2_string(x) for x in value)
            out += b"](" + b"".join(items) + b"e"
        else:
            out += _py2_string(value)
    return out + b"u."


def _make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def _cifar10_members(fmt: str, per_batch: int = 3) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """Members of a tiny CIFAR-10 archive in the official layout, and the expected train/test arrays."""
    names = [f"name{k}" for k in range(10)]
    members, expected = {}, {}
    batches = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    for split, files in batches.items():
        datas, labels = [], []
        for seed, stem in enumerate(files):
            data, fine, _ = _cifar_arrays(per_batch, 10, seed + 10 * (split == "test"))
            datas.append(data)
            labels += fine
            if fmt == "python":
                members[f"cifar-10-batches-py/{stem}"] = _pickled(
                    {"batch_label": stem, "labels": fine, "data": data}
                )
            else:
                rows = np.concatenate([np.array(fine, np.uint8)[:, None], data], axis=1)
                members[f"cifar-10-batches-bin/{stem}.bin"] = rows.tobytes()
        expected[split] = (np.concatenate(datas), labels)
    if fmt == "python":
        members["cifar-10-batches-py/batches.meta"] = _py2_pickled({"label_names": names})
    else:
        members["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(names) + "\n\n").encode()
    return members, expected


@pytest.mark.parametrize("fmt", ["python", "binary"])
def test_cifar10_archive_and_extracted_folder(tmp_path, fmt):
    members, expected = _cifar10_members(fmt)
    archive = _make_tar(tmp_path / "fake.tar.gz", members)
    for split in ("train", "test"):
        data = load_cifar(archive, split)
        pixels, labels = expected[split]
        assert data.images.shape == (len(labels), 3, 32, 32)
        assert torch.equal(data.images.reshape(len(labels), -1), torch.from_numpy(pixels))
        assert data.labels.tolist() == labels
        assert data.classes == [f"name{k}" for k in range(10)]
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    folder = next((tmp_path / "x").iterdir())
    for path in (tmp_path / "x", folder):  # parent folder or the batches folder itself
        assert torch.equal(
            load_cifar(path, "test", variant="cifar10").images, load_cifar(archive, "test").images
        )


@pytest.mark.parametrize("fmt", ["python", "binary"])
def test_cifar100_fine_and_coarse_labels(tmp_path, fmt):
    members = {}
    fine_names = [f"fine{k}" for k in range(100)]
    coarse_names = [f"coarse{k}" for k in range(20)]
    expected = {}
    for split, seed in (("train", 1), ("test", 2)):
        data, fine, coarse = _cifar_arrays(6, 100, seed)
        expected[split] = (data, fine, coarse)
        if fmt == "python":
            batch = {"data": data, "fine_labels": fine, "coarse_labels": coarse, "filenames": ["a"] * 6}
            members[f"cifar-100-python/{split}"] = _pickled(batch)
        else:
            rows = np.concatenate(
                [np.array(coarse, np.uint8)[:, None], np.array(fine, np.uint8)[:, None], data], 1
            )
            members[f"cifar-100-binary/{split}.bin"] = rows.tobytes()
    if fmt == "python":
        members["cifar-100-python/meta"] = _pickled(
            {"fine_label_names": fine_names, "coarse_label_names": coarse_names}
        )
    else:
        members["cifar-100-binary/fine_label_names.txt"] = "\n".join(fine_names).encode()
        members["cifar-100-binary/coarse_label_names.txt"] = "\n".join(coarse_names).encode()
    archive = _make_tar(tmp_path / "c100.tar.gz", members)
    fine_set = load_cifar(archive, "test", variant="cifar100")
    assert fine_set.labels.tolist() == expected["test"][1] and fine_set.classes == fine_names
    coarse_set = load_cifar(archive, "train", labels="coarse")
    assert coarse_set.labels.tolist() == expected["train"][2] and len(coarse_set.classes) == 20
    with pytest.raises(DatasetError, match="cifar-10"):
        load_cifar(archive, "train", variant="cifar10")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_python_batches_refuse_foreign_globals(tmp_path):
    members, _ = _cifar10_members("python")
    members["cifar-10-batches-py/test_batch"] = pickle.dumps({"data": _Exploit(), "labels": []}, protocol=2)
    archive = _make_tar(tmp_path / "evil.tar.gz", members)
    with pytest.raises(DatasetError, match=r"refusing to unpickle (posix|os|nt)\.system"):
        load_cifar(archive, "test")


@pytest.mark.parametrize(
    ("fmt", "name"), [("binary", "cifar-10-binary.tar.gz"), ("python", "cifar-10-python.tar.gz")]
)
def test_cifar_official_name_is_md5_checked(tmp_path, fmt, name):
    members, _ = _cifar10_members(fmt)
    archive = _make_tar(tmp_path / name, members)
    with pytest.raises(DatasetError, match="md5"):
        load_cifar(archive, "test")
    with pytest.raises(DatasetError, match="md5"):
        open_dataset(f"cifar10:{archive}", "test")
    assert len(load_cifar(archive, "test", verify=False)) == 3


def test_cifar_repacked_archive_is_read_without_the_official_md5(tmp_path):
    """A repacked archive (like the shared lossless CIFAR-10) carries another name: no md5 applies."""
    members, expected = _cifar10_members("binary")
    archive = _make_tar(tmp_path / "cifar10-binary-lossless.tar.gz", members)
    test = open_dataset(f"cifar10:{archive}", "test")
    assert torch.equal(test.images.reshape(len(test), -1), torch.from_numpy(expected["test"][0]))
    assert len(open_dataset(f"cifar10:{archive}", "train")) == 15


@pytest.mark.skipif(
    not LOSSLESS.is_file(), reason=f"shared lossless CIFAR-10 archive not found at {LOSSLESS}"
)
def test_shared_lossless_cifar10_reads_packed():
    """The reference data, read packed as the Makefile reads it, holds what its datasets README states."""
    test = open_dataset(f"cifar10:{LOSSLESS}", "test")
    assert test.shape == (10_000, 3, 32, 32)
    assert test.classes == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
    ]  # fmt: skip
    assert test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert torch.bincount(test.labels).tolist() == [1_000] * 10
    train = open_dataset(f"cifar10:{LOSSLESS}", "train")
    assert train.shape == (50_000, 3, 32, 32) and train.classes == test.classes
    assert torch.bincount(train.labels).tolist() == [5_000] * 10


def test_cifar_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_cifar(tmp_path / "nope.tar.gz")
    with pytest.raises(DatasetError, match="no CIFAR data"):
        load_cifar(tmp_path)
    (tmp_path / "junk.tar.gz").write_bytes(b"junk")
    with pytest.raises(DatasetError, match=r"junk\.tar\.gz"):
        load_cifar(tmp_path / "junk.tar.gz")
    members, _ = _cifar10_members("binary")
    members["cifar-10-batches-bin/test_batch.bin"] = b"\x00" * 100
    with pytest.raises(DatasetError, match="records"):
        load_cifar(_make_tar(tmp_path / "short.tar.gz", members), "test")


def test_download_reports_network_failure(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(cifar_module.urllib.request, "urlopen", offline)
    with pytest.raises(DatasetError, match=r"cannot download .*cifar-10-binary\.tar\.gz"):
        download_cifar("cifar10", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_checks_md5(tmp_path, monkeypatch):
    payload = b"pretend archive"

    def fake_urlopen(url, timeout):
        return io.BytesIO(payload)

    monkeypatch.setattr(cifar_module.urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(DatasetError, match="md5"):
        download_cifar("cifar10", tmp_path)
    layout = next(x for x in cifar_module.LAYOUTS if x.archive == "cifar-10-binary.tar.gz")
    patched = dataclasses.replace(layout, md5=hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(cifar_module, "LAYOUTS", (patched,))
    assert download_cifar("cifar10", tmp_path).read_bytes() == payload


# ---------------------------------------------------------------- specs


def test_open_dataset_specs(tmp_path):
    synth = open_dataset("synthetic:classes=3,n=12,size=8,test_n=5", "test")
    assert synth.images.shape == (5, 3, 8, 8) and len(synth.classes) == 3
    _write_tree(tmp_path / "split" / "train", {"a": 2, "b": 1})
    _write_tree(tmp_path / "split" / "val", {"a": 1, "b": 1})
    assert len(open_dataset(f"imagefolder:{tmp_path / 'split'}", "train")) == 3
    assert len(open_dataset(str(tmp_path / "split"), "test")) == 2  # bare path, val/ stands for test/
    _write_tree(tmp_path / "flat", {"a": 1, "b": 1})
    assert len(open_dataset(str(tmp_path / "flat"), "train")) == 2
    members, _ = _cifar10_members("binary")
    (tmp_path / "c").mkdir()
    _make_tar(tmp_path / "c" / "cifar-10-binary.tar.gz", members)
    assert len(open_dataset(f"cifar10:{tmp_path / 'c'}", "test", verify=False)) == 3
    assert len(open_dataset(str(tmp_path / "c"), "test", verify=False)) == 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("synthetic:classes=3,bogus=1", "bogus"),
        ("synthetic:n=abc", "not an integer"),
        ("imagefolder:/no/such/dir", "/no/such/dir"),
        ("/no/such/path", "/no/such/path"),
        ("cifar10:", "names no path"),
    ],
)
def test_open_dataset_bad_specs(spec, message):
    with pytest.raises(DatasetError, match=message):
        open_dataset(spec, "train")
    with pytest.raises(DatasetError, match="split"):
        open_dataset("synthetic:n=4", "validation")


# ---------------------------------------------------------------- transforms


def test_to_float_range():
    images = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    assert torch.allclose(to_float(images).flatten(), torch.tensor([0.0, 128 / 255, 1.0]))


def test_random_crop_is_a_shift_with_zero_fill():
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.int64).view(2, 3, 6, 6).to(torch.uint8) + 1
    gen = torch.Generator().manual_seed(0)
    crops = random_crop(images, 2, gen)
    assert crops.shape == images.shape and crops.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for n in range(2):
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(crops[n], padded[n, :, dy : dy + 6, dx : dx + 6])
        ]
        assert matches
    assert torch.equal(random_crop(images, 0), images)


def test_random_flip_mirrors_some_images():
    images = torch.arange(64 * 4, dtype=torch.float32).view(64, 1, 1, 4)
    flipped = random_flip(images, torch.Generator().manual_seed(0))
    same = (flipped == images).all(dim=(1, 2, 3))
    mirrored = (flipped == images.flip(3)).all(dim=(1, 2, 3))
    assert bool((same | mirrored).all()) and 0 < int(mirrored.sum()) < 64
