"""Checkpoints: weights in safetensors, everything else in a JSON manifest; never pickle.

Two layouts: a directory holding ``manifest.json`` and ``weights.safetensors``, or one ``.safetensors``
file whose header metadata carries the manifest. The manifest records the sha256 of the weights (over
names, dtypes, shapes and bytes, so both layouts share it) and, from schema 3, the sha256 of every
manifest field that decides behaviour (graph, windows, shift, labels, input, the weights' hash): loading
checks the schema version, both hashes and every tensor the graph refers to, and says which check
failed. Descriptive fields (calibration report, provenance, accuracy) may be edited freely.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from converter.system import atomic_write

SCHEMA_VERSION = 3  # 2: per-layer windows and bias corrections; 3: the manifest's behaviour is sealed
READABLE_VERSIONS = (1, 2, 3)
SEALED_FIELDS = ("graph", "T", "windows", "shift", "labels", "input", "latency_steps", "weights_sha256")
FORMAT = "tsc-snn"
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
METADATA_KEY = "tsc_manifest"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated, tampered with or of another schema version."""


def weights_sha256(tensors: dict[str, Tensor]) -> str:
    """Content hash of named tensors, independent of file layout."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().contiguous().cpu()
        h.update(f"{key}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def manifest_sha256(manifest: dict[str, Any]) -> str:
    """Hash of the manifest fields that decide what the network computes (canonical JSON)."""
    sealed = {k: manifest.get(k) for k in SEALED_FIELDS}
    return hashlib.sha256(json.dumps(sealed, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_checkpoint(path: str | Path, manifest: dict[str, Any], tensors: dict[str, Tensor]) -> dict[str, Any]:
    """Write a checkpoint (a directory, or one file for a .safetensors path); returns the manifest."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    manifest = {
        **manifest,
        "schema_version": SCHEMA_VERSION,
        "format": FORMAT,
        "weights_sha256": weights_sha256(tensors),
    }
    manifest["manifest_sha256"] = manifest_sha256(manifest)
    text = json.dumps(manifest, indent=1)
    if path.suffix == ".safetensors":
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: text}))
    else:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write(path / WEIGHTS, lambda tmp: save_file(tensors, tmp))
        atomic_write(path / MANIFEST, lambda tmp: Path(tmp).write_text(text))
    return manifest


def _read_weights(file: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        with safe_open(str(file), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(file)), metadata
    except Exception as e:  # safetensors raises its own error types for every malformed file
        raise CheckpointError(f"{file}: weights file is corrupt or truncated ({e})") from None


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read and verify a checkpoint; returns (manifest, tensors)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.is_dir():
        mfile, wfile = path / MANIFEST, path / WEIGHTS
        for f in (mfile, wfile):
            if not f.is_file():
                raise CheckpointError(f"{path}: not a checkpoint directory ({f.name} is missing)")
        try:
            manifest = json.loads(mfile.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{mfile}: manifest is not valid JSON ({e})") from None
        tensors, _ = _read_weights(wfile)
    else:
        tensors, metadata = _read_weights(path)
        if METADATA_KEY not in metadata:
            raise CheckpointError(f"{path}: safetensors file without a TSC manifest in its metadata")
        try:
            manifest = json.loads(metadata[METADATA_KEY])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: embedded manifest is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (format field is missing or wrong)")
    version = manifest.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: schema version {version!r} is not supported (this build reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    expected = manifest.get("weights_sha256")
    actual = weights_sha256(tensors)
    if expected != actual:
        raise CheckpointError(
            f"{path}: weights do not match the manifest's sha256 (tampered or corrupt): "
            f"expected {expected}, found {actual}"
        )
    if (version >= 3 or "manifest_sha256" in manifest) and manifest.get("manifest_sha256") != manifest_sha256(
        manifest
    ):
        raise CheckpointError(
            f"{path}: the manifest's behaviour-defining fields ({', '.join(SEALED_FIELDS)}) were edited "
            "after it was written (manifest_sha256 does not match); convert the model again"
        )
    return manifest, tensors
