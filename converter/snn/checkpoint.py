"""Checkpoints: weights in safetensors, everything else in a JSON manifest; never pickle.

Two layouts: a directory holding ``manifest.json`` and ``weights.safetensors``, or one ``.safetensors``
file whose header metadata carries the manifest. The manifest records the sha256 of the weights (over
names, dtypes, shapes and bytes, so both layouts share it) and, from schema 3, the sha256 of every
manifest field that decides behaviour (graph, windows, shift, labels, input, the weights' hash): loading
checks the schema version, both hashes and every tensor the graph refers to, and says which check
failed. Descriptive fields (calibration report, provenance, accuracy) may be edited freely. The seal is
also written into the weights file's own metadata, so that turning a sealed manifest into an older,
unsealed schema (lowering ``schema_version``, deleting ``manifest_sha256``) is refused too; a checkpoint
written before seals existed loads with a warning.

``write`` and ``read`` map a network to and from that form: graph spec and weights, a ``lam.<layer>``
threshold and ``correction.<layer>`` bias correction per layer; ``read`` runs a blank image through the
graph so that a malformed checkpoint fails when it is loaded, not when it is first used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from converter.snn.engines import ann
from converter.snn.graph import Graph
from converter.snn.model import InputSpec, Network, network_dtype
from converter.snn.system import atomic_write

SCHEMA_VERSION = 3  # 2: per-layer windows and bias corrections; 3: the manifest's behaviour is sealed
READABLE_VERSIONS = (1, 2, 3)
SEALED_FIELDS = ("graph", "T", "windows", "shift", "labels", "input", "latency_steps", "weights_sha256")
FORMAT = "tsc-snn"
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
METADATA_KEY = "tsc_manifest"
SEAL_KEY = "tsc_manifest_sha256"  # the seal, in the weights file's metadata
log = logging.getLogger(__name__)
LAM_PREFIX = "lam."
CORRECTION_PREFIX = "correction."


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
    seal = manifest["manifest_sha256"] = manifest_sha256(manifest)
    text = json.dumps(manifest, indent=1)
    if path.suffix == ".safetensors":
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {METADATA_KEY: text, SEAL_KEY: seal}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    else:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write(path / WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={SEAL_KEY: seal}))
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
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise CheckpointError(f"{mfile}: manifest is not valid JSON ({e})") from None
        tensors, metadata = _read_weights(wfile)
    else:
        tensors, metadata = _read_weights(path)
        if METADATA_KEY not in metadata:
            raise CheckpointError(f"{path}: safetensors file without a TSC manifest in its metadata")
        try:
            manifest = json.loads(metadata[METADATA_KEY])
        except (json.JSONDecodeError, RecursionError) as e:
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
    try:
        _check_seal(path, manifest, metadata.get(SEAL_KEY))
    except RecursionError:  # a manifest nested deeper than json can hash
        raise CheckpointError(f"{path}: the manifest is nested too deeply to be a checkpoint's") from None
    return manifest, tensors


def _check_seal(path: Path, manifest: dict[str, Any], weights_seal: str | None) -> None:
    """Refuse a manifest whose behaviour-defining fields changed after it was sealed (or lost the seal)."""
    seal = manifest.get("manifest_sha256")
    if weights_seal is not None and seal != weights_seal:
        raise CheckpointError(
            f"{path}: the manifest lost or changed the seal its weights file records (schema_version "
            "lowered or manifest_sha256 removed or edited); convert the model again"
        )
    if seal is None and manifest["schema_version"] < 3:
        log.warning(
            "%s: an unsealed checkpoint of schema %s; its fields are validated but not sealed",
            path,
            manifest["schema_version"],
        )
        return
    if seal != manifest_sha256(manifest):
        raise CheckpointError(
            f"{path}: the manifest's behaviour-defining fields ({', '.join(SEALED_FIELDS)}) were edited "
            "after it was written (manifest_sha256 does not match); convert the model again"
        )


def write(net: Network, path: str | Path) -> dict[str, Any]:
    """Write ``net`` as a checkpoint directory (or one ``.safetensors`` file); returns its manifest."""
    spec, tensors = net.graph.to_spec()
    tensors.update({LAM_PREFIX + k: v for k, v in net.lams.items()})
    tensors.update({CORRECTION_PREFIX + k: v for k, v in net.corrections.items()})
    return save_checkpoint(path, {**net.manifest, "graph": spec}, tensors)


def _dry_run(graph: Graph, lams: dict[str, Tensor], spec: InputSpec, path: str | Path) -> None:
    """Run one blank image through the graph so that a malformed one fails at load, not at run time."""
    by_name = graph.by_name
    dtype = network_dtype(graph, lams)

    def check_shape(name: str, activation: Tensor) -> None:
        if tuple(activation.shape[1:]) != by_name[name].shape:
            raise ValueError(
                f"layer {name!r} computes {tuple(activation.shape[1:])}, not {by_name[name].shape}"
            )

    try:
        with torch.no_grad():
            x = torch.zeros(1, spec.channels, spec.height, spec.width, dtype=dtype)
            check_shape("output", ann.forward(graph, x, on_neuron=check_shape, lams=lams))
    except (RuntimeError, ValueError, IndexError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: the graph cannot run on its own input ({first})") from None


def read(path: str | Path) -> dict[str, Any]:
    """Read and verify a checkpoint written by ``write``: the network's constructor arguments by name."""
    manifest, tensors = load_checkpoint(path)
    try:
        graph = Graph.from_spec(manifest["graph"], tensors)
        lams = {k[len(LAM_PREFIX) :]: v for k, v in tensors.items() if k.startswith(LAM_PREFIX)}
        corrections = {
            k[len(CORRECTION_PREFIX) :]: v for k, v in tensors.items() if k.startswith(CORRECTION_PREFIX)
        }
        _check_values(path, graph, lams, corrections, manifest)
        spec = InputSpec(**{k: int(manifest["input"][k]) for k in ("channels", "height", "width")})
        if min(spec.channels, spec.height, spec.width) < 1:
            raise CheckpointError(f"{path}: the input must have positive channels, height and width")
        _dry_run(graph, lams, spec, path)  # before the constructor counts synapses on the graph
        return {
            "graph": graph,
            "lams": lams,
            "T": manifest.get("windows") or int(manifest["T"]),
            "shift": float(manifest["shift"]),
            "name": manifest["name"],
            "version": str(manifest["version"]),
            "labels": manifest["labels"],
            "input_spec": spec,
            "calibration": manifest.get("calibration", {}),
            "provenance": manifest.get("provenance", {}),
            "accuracy": manifest.get("accuracy", {}),
            "corrections": corrections,
            "manifest": manifest,
        }
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError, RecursionError) as e:
        raise CheckpointError(
            f"{path}: manifest is incomplete or inconsistent ({type(e).__name__}: {e})"
        ) from None


def _check_values(
    path: str | Path,
    graph: Graph,
    lams: dict[str, Tensor],
    corrections: dict[str, Tensor],
    manifest: dict[str, Any],
) -> None:
    """Refuse values no converter writes: a threshold per layer (scalar or per channel), finite and positive;
    bias corrections one per channel of a neuron or output layer; finite weights; labels as strings."""
    missing = [p.name for p in graph.neurons if p.name not in lams]
    if missing:
        raise CheckpointError(f"{path}: no threshold for neuron layers {missing}")
    for name in [k for k in lams if k not in graph.by_name]:  # written before unused branches were pruned
        log.warning("%s: ignoring the threshold of %r, a layer the graph does not have", path, name)
        del lams[name]
    for name, lam in lams.items():
        p = graph.by_name[name]
        if p.kind != "neuron" or lam.dim() > 1 or lam.numel() not in (1, p.shape[0]):
            raise CheckpointError(f"{path}: threshold {name!r} of shape {tuple(lam.shape)} fits no layer")
        if not bool(torch.isfinite(lam).all() and (lam > 0).all()):
            raise CheckpointError(f"{path}: threshold {name!r} is not a finite positive number everywhere")
    for name, c in corrections.items():
        p = graph.by_name.get(name)
        if p is None or p.kind not in ("neuron", "output") or tuple(c.shape) != p.shape[:1]:
            raise CheckpointError(f"{path}: bias correction {name!r} of shape {tuple(c.shape)} fits no layer")
    if not all(bool(torch.isfinite(t).all()) for t in (*graph.tensors(), *corrections.values())):
        raise CheckpointError(f"{path}: a weight, bias or correction is not finite (NaN or infinity)")
    labels = manifest["labels"]
    if not isinstance(labels, list) or not all(isinstance(label, (str, int)) for label in labels):
        raise CheckpointError(f"{path}: labels must be a list of strings (or whole numbers)")
