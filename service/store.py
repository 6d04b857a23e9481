"""The model store: every model of the model directory, loaded at start-up, and the repository operations
(index, load, unload) that change what is served while the service runs.

A model is served in every version its directory entry holds; a request that names no version gets the
latest (``registry.latest``). Loading a model again loads all its versions afresh and swaps them in only
when every one loaded: a checkpoint or settings file that fails leaves what was served as it was, with the
reason in ``failures``. The replaced or unloaded versions finish what they have queued, then their workers
forget them. Repository operations run one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from converter.snn import CheckpointError
from service.errors import ModelNotFound, NotReady, ServiceError
from service.metrics import Metrics
from service.model_settings import ModelSettingsError
from service.registry import ServedModel, checkpoints, discover, latest, open_model
from service.settings import Settings

log = logging.getLogger(__name__)


class LoadFailed(ServiceError):
    """A model of the model directory failed to load (what was served before is served still)."""

    status, error = 400, "load_failed"


@dataclass(frozen=True)
class RepositoryEntry:
    """One model version of the model directory and whether it is served."""

    name: str
    version: str | None
    state: Literal["READY", "UNAVAILABLE"]
    reason: str | None = None


class ModelStore:
    """The served models by name and version, their load failures, and the operations that change them."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.versions: dict[str, dict[str, ServedModel]] = {}
        self.failures: dict[str, str] = {}
        self.loading = True
        self.stopping = False
        self._executors: dict[str, Executor] = {}
        self._changing = asyncio.Lock()

    @property
    def models(self) -> dict[str, ServedModel]:
        """Every served model by name, in its latest version."""
        return {name: latest(versions) for name, versions in self.versions.items()}

    @property
    def default_name(self) -> str | None:
        """TSC_DEFAULT_MODEL when it is loaded; when it is not set, the first loaded model; else None."""
        if self.settings.default_model in self.versions:
            return self.settings.default_model
        if self._default_configured():
            return None
        return next(iter(self.versions), None)

    def _default_configured(self) -> bool:
        """Whether TSC_DEFAULT_MODEL was set (rather than left at its built-in value)."""
        return "default_model" in self.settings.model_fields_set

    async def load_all(self, executors: dict[str, Executor]) -> None:
        """Load and warm up every model found; a broken one is logged and skipped, never fatal.

        ``executors`` holds a worker per lane (``Engine.lane``: the reference simulations take seconds
        per image, so they run apart and never hold up a fast answer); each loads its own copy.
        """
        self._executors = executors
        try:
            async with self._changing:
                for name, entry in self._discover().items():
                    await self._load(name, entry)
        finally:
            self.loading = False
        missing = self._default_missing(public=False)
        if self.versions and missing is not None:
            log.error("%s; the service is not ready (requests that name a loaded model are served)", missing)
        elif self.versions and self.default_name != self.settings.default_model:
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

    async def _load(self, name: str, entry: Path) -> bool:
        """Load every version of ``name`` and swap them in; False (and the reason kept) when one failed."""
        started = time.perf_counter()
        loaded: dict[str, ServedModel] = {}
        problem = None
        for path in checkpoints(entry):
            try:
                served = await open_model(name, path, self.settings, self._executors, self.metrics)
            except (CheckpointError, ModelSettingsError) as exc:
                problem = str(exc)
            except Exception as exc:
                log.exception("loading %s failed", path)
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if served.version not in loaded:
                    loaded[served.version] = served
                    continue
                problem = f"{path.name}: version {served.version!r} is already served from another folder"
                await served.close()
            break
        if problem is not None or not loaded:
            await asyncio.gather(*(served.close() for served in loaded.values()))
            self._fail(name, problem or f"no checkpoint left in {entry}")
            return False
        self.failures.pop(name, None)
        replaced = self.versions.get(name, {})
        self.versions[name] = loaded
        net = latest(loaded).net
        self.metrics.model_loaded(name, net, loaded=len(self.versions))
        seconds = time.perf_counter() - started
        log.info(
            "loaded %s (versions %s, T=%d) from %s in %.2f s", name, ", ".join(loaded), net.T, entry, seconds
        )
        await asyncio.gather(*(served.close() for served in replaced.values()))
        return True

    def _fail(self, name: str, reason: str) -> None:
        log.error("model %s not loaded: %s", name, reason)
        self.failures[name] = reason
        self.metrics.model_load_failures.inc()

    async def load(self, name: str) -> None:
        """Load (or load again) the model ``name`` from the model directory; ``ModelNotFound`` when it has
        no such entry, ``LoadFailed`` with the reason when a version fails (the old versions then stay)."""
        async with self._changing:
            self._ensure_running()
            entry = discover(self.settings.model_dir).get(name)
            if entry is None:
                raise ModelNotFound(f"the model directory has no model {name!r}")
            if not await self._load(name, entry):
                raise LoadFailed(f"model {name!r} failed to load: {self.failures[name]}")

    async def unload(self, name: str) -> None:
        """Stop serving ``name`` (every version): its queued images are answered first."""
        async with self._changing:
            self._ensure_running()
            versions = self.versions.pop(name, None)
            if versions is None:
                raise ModelNotFound(
                    f"model {name!r} is not loaded; loaded models: {', '.join(self.versions)}"
                )
            self.metrics.model_unloaded(name, loaded=len(self.versions))
            log.info("unloading %s (versions %s)", name, ", ".join(versions))
            await asyncio.gather(*(served.close() for served in versions.values()))

    def _ensure_running(self) -> None:
        """``NotReady`` while the store is loading at start-up or stopping."""
        reason = (
            "the server is shutting down" if self.stopping else "models are loading" if self.loading else None
        )
        if reason is not None:
            raise NotReady(reason)

    def index(self) -> list[RepositoryEntry]:
        """Every model of the model directory (and every one still served), each version's state."""
        try:
            listed = set(discover(self.settings.model_dir))
        except OSError:
            listed = set()
        entries: list[RepositoryEntry] = []
        for name in sorted(listed | set(self.versions) | set(self.failures) - {str(self.settings.model_dir)}):
            versions = self.versions.get(name, {})
            entries += [RepositoryEntry(name, version, "READY") for version in versions]
            if name in self.failures:
                entries.append(RepositoryEntry(name, None, "UNAVAILABLE", self.failures[name]))
            elif not versions:
                entries.append(RepositoryEntry(name, None, "UNAVAILABLE", "not loaded"))
        return entries

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
        return None if self.versions else self._none_loaded(public)

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
        if not self._default_configured() or name in self.versions:
            return None
        if public:
            return "the configured default model is not loaded; the server log (and GET /models) say why"
        why = self.failures.get(name, f"no checkpoint named {name!r} in {self.settings.model_dir}")
        return f"TSC_DEFAULT_MODEL {name!r} is not loaded: {why}"

    def get(self, name: str | None, version: str | None = None) -> ServedModel:
        """The named model (in ``version``, else its latest), or the default; raises NotReady or
        ModelNotFound. A request that names a loaded model is served even while a configured default is
        missing."""
        reason = self._unavailable(public=True) or (self._default_missing(public=True) if not name else None)
        if reason is not None:
            raise NotReady(reason)
        key = name or self.default_name
        versions = self.versions.get(key or "")
        if versions is None:
            raise ModelNotFound(f"model {name!r} is not loaded; loaded models: {', '.join(self.versions)}")
        if version is None:
            return latest(versions)
        if version not in versions:
            raise ModelNotFound(f"model {key!r} has no version {version!r}; it serves {', '.join(versions)}")
        return versions[version]

    async def close(self) -> None:
        """Refuse new work and let every batcher finish what it has queued."""
        self.stopping = True
        await asyncio.gather(*(s.close() for versions in self.versions.values() for s in versions.values()))
