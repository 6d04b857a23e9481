"""The model store: finds checkpoints in the model directory, loads and warms them up, serves them by name.

Names come from the model directory's entries (``<name>/manifest.json`` or ``<name>.safetensors``) and
requests can only pick among the loaded ones, so no request ever builds a file path.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import torch

from converter.snn import CheckpointError, ImageResult, SpikingNetwork, load
from service import workers
from service.batching import Batcher
from service.errors import ModelNotFound, NotReady
from service.metrics import Metrics
from service.settings import Settings, resolve_device

log = logging.getLogger(__name__)

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def discover(model_dir: Path) -> dict[str, Path]:
    """Checkpoints in ``model_dir`` by name: directories holding a manifest.json, and .safetensors files."""
    found: dict[str, Path] = {}
    entries = sorted(model_dir.iterdir()) if model_dir.is_dir() else []
    for entry in entries:
        if entry.is_dir() and (entry / "manifest.json").is_file():
            name = entry.name
        elif entry.is_file() and entry.suffix == ".safetensors":
            name = entry.stem
        else:
            continue
        if not re.fullmatch(MODEL_NAME_PATTERN, name) or name in found:
            log.warning("skipping %s: its name is not a valid, unique model name", entry)
            continue
        found[name] = entry
    return found


@dataclass(frozen=True)
class ServedModel:
    """A loaded network and its batchers, one per lane (``DataPlane.infer`` picks them). ``net`` is this
    process's copy, for what the answers say about it (labels, manifest, input); each lane's worker runs
    its own, cast to the serving precision and device and warmed up."""

    name: str
    path: Path
    net: SpikingNetwork
    batchers: dict[str, Batcher[ImageResult]]
    key: str = ""  # what the workers call it

    async def close(self) -> None:
        """Let every lane finish what it has queued, then let the workers forget the network."""
        await asyncio.gather(*(batcher.close() for batcher in self.batchers.values()))
        for batcher in self.batchers.values():
            batcher.executor.submit(workers.unload, self.key)


class ModelStore:
    """Every model of the model directory, loaded once at start-up in the inference thread."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, ServedModel] = {}
        self.failures: dict[str, str] = {}
        self.loading = True
        self.stopping = False

    @property
    def default_name(self) -> str | None:
        """TSC_DEFAULT_MODEL when it is loaded; when it is not set, the first loaded model; else None."""
        if self.settings.default_model in self.models:
            return self.settings.default_model
        if self._default_configured():
            return None
        return next(iter(self.models), None)

    def _default_configured(self) -> bool:
        """Whether TSC_DEFAULT_MODEL was set (rather than left at its built-in value)."""
        return "default_model" in self.settings.model_fields_set

    async def load_all(self, executors: dict[str, Executor]) -> None:
        """Load and warm up every checkpoint found; a broken one is logged and skipped, never fatal.

        ``executors`` holds a worker per lane (``Engine.lane``: the reference simulations take seconds
        per image, so they run apart and never hold up a fast answer); each loads its own copy.
        """
        try:
            for name, path in self._discover().items():
                await self._load(name, path, executors)
        finally:
            self.loading = False
        missing = self._default_missing(public=False)
        if self.models and missing is not None:
            log.error("%s; the service is not ready (requests that name a loaded model are served)", missing)
        elif self.models and self.default_name != self.settings.default_model:
            log.warning("the default model is %r (TSC_DEFAULT_MODEL is not set)", self.default_name)

    def _discover(self) -> dict[str, Path]:
        model_dir = self.settings.model_dir
        try:
            found = discover(model_dir)
        except OSError as exc:
            self._fail(str(model_dir), f"cannot list the model directory: {exc}")
            return {}
        if not found:
            log.error("no checkpoints in %s: the service is up but not ready (set TSC_MODEL_DIR)", model_dir)
        return found

    async def _load(self, name: str, path: Path, executors: dict[str, Executor]) -> None:
        started = time.perf_counter()
        loop, precision = asyncio.get_running_loop(), self.settings.precision
        key = f"{name}:{uuid.uuid4().hex}"  # what the workers call it (a worker may serve several stores)
        try:
            net = await loop.run_in_executor(None, lambda: load(path).to(getattr(torch, precision)))
            device = str(resolve_device(self.settings.device))
            await asyncio.gather(
                *(
                    loop.run_in_executor(executor, workers.load_network, key, path, precision, device)
                    for executor in workers.distinct(executors.values())
                )
            )
        except CheckpointError as exc:
            self._fail(name, str(exc))
            return
        except Exception as exc:
            log.exception("loading %s failed", path)
            self._fail(name, f"{type(exc).__name__}: {exc}")
            return
        runner = functools.partial(workers.run, key, rate_steps=self.settings.rate_steps)
        batchers = {
            lane: Batcher(
                name,
                runner,
                executor,
                self.metrics,
                max_batch_size=self.settings.max_batch_size,
                max_delay_s=self.settings.max_batch_delay_ms / 1000,
                max_queue_size=self.settings.max_queue_size,
                lane=lane,
                client_queue_size=self.settings.client_queue_size,
            )
            for lane, executor in executors.items()
        }
        self.models[name] = ServedModel(name, path, net, batchers, key)
        self.metrics.model_loaded(name, net, loaded=len(self.models))
        seconds = time.perf_counter() - started
        log.info("loaded %s (version %s, T=%d) from %s in %.2f s", name, net.version, net.T, path, seconds)

    def _fail(self, name: str, reason: str) -> None:
        log.error("model %s not loaded: %s", name, reason)
        self.failures[name] = reason
        self.metrics.model_load_failures.inc()

    def not_ready_reason(self, public: bool = True) -> str | None:
        """Why the store cannot serve yet (None when it can).

        The public form is fit for anyone (no path, file name or hash); the full one names the model
        directory and every checkpoint error, for the log and ``GET /models``.
        """
        return self._unavailable(public) or self._default_missing(public)

    def _unavailable(self, public: bool) -> str | None:
        """Why no model can be served at all (stopping, loading, none loaded), or None."""
        if self.stopping:
            return "the server is shutting down"
        if self.loading:
            return "models are loading" if public else f"loading models from {self.settings.model_dir}"
        return None if self.models else self._none_loaded(public)

    def _none_loaded(self, public: bool) -> str:
        """Why no model is loaded."""
        model_dir = self.settings.model_dir
        if public:
            return "no model could be loaded; the server log (and GET /models) say why"
        if self.failures:
            failures = "; ".join(f"{name}: {reason}" for name, reason in self.failures.items())
            return f"no model could be loaded from {model_dir} ({failures})"
        return f"no checkpoint (<name>/manifest.json or <name>.safetensors) in {model_dir}"

    def _default_missing(self, public: bool) -> str | None:
        """Why not ready when TSC_DEFAULT_MODEL was set and that model is not loaded (None otherwise).

        Requests that name no model would otherwise go to another model without anyone noticing; when
        the variable is not set, the first loaded model is the default.
        """
        name = self.settings.default_model
        if not self._default_configured() or name in self.models:
            return None
        if public:
            return "the configured default model is not loaded; the server log (and GET /models) say why"
        why = self.failures.get(name, f"no checkpoint named {name!r} in {self.settings.model_dir}")
        return f"TSC_DEFAULT_MODEL {name!r} is not loaded: {why}"

    def get(self, name: str | None) -> ServedModel:
        """The named model, or the default; raises NotReady or ModelNotFound.

        A request that names a loaded model is served even while a configured default is missing.
        """
        reason = self._unavailable(public=True) or (self._default_missing(public=True) if not name else None)
        if reason is not None:
            raise NotReady(reason)
        key = name or self.default_name
        if key not in self.models:
            raise ModelNotFound(f"model {name!r} is not loaded; loaded models: {', '.join(self.models)}")
        return self.models[key]

    async def close(self) -> None:
        """Refuse new work and let every batcher finish what it has queued."""
        self.stopping = True
        await asyncio.gather(*(model.close() for model in self.models.values()))
