"""Checkpoints in the model directory and how one becomes a served model.

Names come from the model directory's entries and requests can only pick among the loaded ones, so no
request ever builds a file path. An entry is one checkpoint (``<name>/manifest.json`` or
``<name>.safetensors``) or several versions of one model (``<name>/<folder>/manifest.json`` each; a
version is named by its manifest's ``version``), served side by side.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from converter.snn import ImageResult, SpikingNetwork, load
from service import workers
from service.batching import Batcher
from service.metrics import Metrics
from service.model_settings import ModelSettings, ModelSettingsError, read_model_settings
from service.settings import Settings, resolve_device

log = logging.getLogger(__name__)

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def _is_checkpoint(entry: Path) -> bool:
    """Whether ``entry`` is one checkpoint: a folder with a manifest, or a .safetensors file."""
    return (entry.is_dir() and (entry / "manifest.json").is_file()) or (
        entry.is_file() and entry.suffix == ".safetensors"
    )


def checkpoints(entry: Path) -> list[Path]:
    """The checkpoints of a model directory entry: itself, or its version folders in name order."""
    if _is_checkpoint(entry):
        return [entry]
    if not entry.is_dir():
        return []
    return sorted(sub for sub in entry.iterdir() if sub.is_dir() and (sub / "manifest.json").is_file())


def discover(model_dir: Path) -> dict[str, Path]:
    """Models in ``model_dir`` by name: checkpoints, and folders of version folders."""
    found: dict[str, Path] = {}
    entries = sorted(model_dir.iterdir()) if model_dir.is_dir() else []
    for entry in entries:
        if not checkpoints(entry):
            continue
        name = entry.stem if entry.is_file() else entry.name
        if not re.fullmatch(MODEL_NAME_PATTERN, name) or name in found:
            log.warning("skipping %s: its name is not a valid, unique model name", entry)
            continue
        found[name] = entry
    return found


def latest(versions: dict[str, ServedModel]) -> ServedModel:
    """The version a request that names none gets: the highest number, else the last name in order."""

    def order(served: ServedModel) -> tuple[bool, int, str]:
        v = served.version
        return v.isdigit(), int(v) if v.isdigit() else 0, v

    return max(versions.values(), key=order)


@dataclass(frozen=True)
class ServedModel:
    """A loaded network and its batchers, one per lane (``DataPlane.infer`` picks them). ``net`` is this
    process's copy, for what the answers say about it (labels, manifest, input); each lane's worker runs
    its own under ``key``, cast to the serving precision and device and warmed up."""

    name: str
    path: Path
    net: SpikingNetwork
    batchers: dict[str, Batcher[ImageResult]]
    key: str = ""
    settings: ModelSettings = field(default_factory=ModelSettings)

    @property
    def version(self) -> str:
        """The checkpoint's version."""
        return self.net.version

    async def close(self) -> None:
        """Let every lane finish what it has queued, then let the workers forget the network."""
        await asyncio.gather(*(batcher.close() for batcher in self.batchers.values()))
        for executor in workers.distinct(b.executor for b in self.batchers.values()):
            executor.submit(workers.unload, self.key)


async def open_model(
    name: str, path: Path, settings: Settings, executors: dict[str, Executor], metrics: Metrics
) -> ServedModel:
    """Load one checkpoint with its settings file into every lane's worker and give it batchers; raises
    ``CheckpointError``, ``ModelSettingsError`` or what loading raised, with no worker left holding it."""
    own = read_model_settings(path)
    if own.max_batch_size is not None and own.max_batch_size > settings.max_queue_size:
        raise ModelSettingsError(
            f"max_batch_size {own.max_batch_size} is above TSC_MAX_QUEUE_SIZE ({settings.max_queue_size})"
        )
    loop, precision = asyncio.get_running_loop(), settings.precision
    key = f"{name}:{uuid.uuid4().hex}"  # what the workers call it (a worker may serve several stores)
    net = await loop.run_in_executor(None, lambda: load(path).to(getattr(torch, precision)))
    device = str(resolve_device(settings.device))
    loaders = workers.distinct(executors.values())
    try:
        await asyncio.gather(
            *(loop.run_in_executor(e, workers.load_network, key, path, precision, device) for e in loaders)
        )
    except BaseException:
        for executor in loaders:
            executor.submit(workers.unload, key)
        raise
    runner = functools.partial(workers.run, key, rate_steps=settings.rate_steps)
    batch_size = own.max_batch_size or settings.max_batch_size
    delay_ms = settings.max_batch_delay_ms if own.max_batch_delay_ms is None else own.max_batch_delay_ms
    batchers = {
        lane: Batcher(
            name,
            runner,
            executor,
            metrics,
            max_batch_size=batch_size,
            max_delay_s=delay_ms / 1000,
            max_queue_size=settings.max_queue_size,
            lane=lane,
            client_queue_size=settings.client_queue_size,
        )
        for lane, executor in executors.items()
    }
    return ServedModel(name, path, net, batchers, key, own)
