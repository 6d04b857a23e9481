"""The use case behind every route: readiness, the models and their metadata, decoding, inference.

Routers only translate a protocol (REST multipart, Open Inference Protocol JSON, the page's requests) into
calls of ``DataPlane`` and its answers back into responses; everything else lives here once: the engine
workers (one per engine lane, a process of its own by default: the reference simulations take seconds per
image, so they never hold up a fast answer), the decoders and their large-image slots, which lane runs
which engine, the compared baselines, and the per-image cost metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from converter.snn import BASELINES, ENGINES, ImageResult, InputSpec, available_cores
from service.batching import Outcome
from service.errors import EngineNotAllowed, NotReady, ServiceError
from service.images import decode_pixels, is_large, open_image, release_memory
from service.metrics import Metrics
from service.registry import ServedModel
from service.settings import Settings
from service.store import ModelStore, RepositoryEntry
from service.workers import start_worker

STOP_WAIT_S = 3.0  # how long stopping waits for queued and running batches after the requests ended

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inference:
    """One request's answers: the model, the engine asked for, and every engine's outcome per image."""

    served: ServedModel
    engine: str
    outcomes: dict[str, list[Outcome[ImageResult]]]

    def of(self, engine: str, i: int) -> Outcome[ImageResult]:
        """Image ``i``'s outcome from ``engine``."""
        return self.outcomes[engine][i]

    @property
    def compared(self) -> bool:
        """Whether the baselines ran too."""
        return all(b in self.outcomes for b in BASELINES)


@dataclass(frozen=True)
class Catalogue:
    """What is served: the default model, every loaded one, the checkpoints that failed and why not ready."""

    default: str | None
    models: dict[str, ServedModel]
    failures: dict[str, str]
    not_ready: str | None  # the full reason: paths and checkpoint errors included


class DataPlane:
    """Serves the models of TSC_MODEL_DIR: started and stopped by the app's lifespan, called by routers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.store = ModelStore(settings, self.metrics)
        self._lanes: dict[str, Executor] = {}
        self._decoding: ThreadPoolExecutor | None = None
        self._large_decodes = asyncio.Semaphore(settings.max_large_decodes)
        self._large_pending = 0  # large decodes waiting or running
        self._loading: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the engine workers and load models in the background (so /livez answers meanwhile)."""
        threads, kind = self.settings.torch_threads, self.settings.engine_workers
        torch.set_num_threads(threads)
        lanes = dict.fromkeys(e.lane for e in ENGINES.values())
        self._lanes = {lane: start_worker(kind, lane, threads) for lane in lanes}
        self._decoding = ThreadPoolExecutor(available_cores(), "tsc-decode")
        self._loading = asyncio.get_running_loop().create_task(self.store.load_all(self._lanes))
        log.info(
            "engines run in a %s per lane with %d torch threads; loading models from %s",
            kind,
            threads,
            self.settings.model_dir,
        )

    async def wait_loaded(self) -> None:
        """Return once start-up loading has finished, whatever its outcome."""
        assert self._loading is not None, "start() first"
        await asyncio.shield(self._loading)

    async def stop(self) -> None:
        """Finish queued work within ``STOP_WAIT_S``, then release the workers (uvicorn has already let
        in-flight requests end, or cut them off at the end of the grace period). A batch still running then
        is abandoned: an engine process is ended, and ``python -m service`` exits without waiting for an
        engine thread."""
        await self.wait_loaded()
        try:
            await asyncio.wait_for(self.store.close(), STOP_WAIT_S)
        except TimeoutError:
            log.warning("a batch was still running %g s after the requests ended: abandoned", STOP_WAIT_S)
        assert self._decoding is not None
        pools = (self._decoding, *self._lanes.values())  # an engine process takes up to 2 STOP_S to end
        await asyncio.gather(*(asyncio.to_thread(p.shutdown, wait=False, cancel_futures=True) for p in pools))
        log.info("stopped")

    def catalogue(self) -> Catalogue:
        """The loaded models, the default, the failed checkpoints and the full not-ready reason."""
        store = self.store
        return Catalogue(
            store.default_name, dict(store.models), dict(store.failures), store.not_ready_reason(public=False)
        )

    def ready(self) -> ServedModel:
        """The default model when every model is loaded; ``NotReady`` with the public reason otherwise."""
        return self.store.get(None)

    def model(self, name: str | None, version: str | None = None) -> ServedModel:
        """The named model (in ``version``, else its latest), or the default; ``NotReady`` or
        ``ModelNotFound``."""
        return self.store.get(name, version)

    def versions(self, name: str) -> list[str]:
        """The versions of ``name`` served side by side (after ``model(name)`` found it)."""
        return list(self.store.versions.get(name, {}))

    def repository(self) -> list[RepositoryEntry]:
        """Every model of the model directory (and every one still served), each version's state."""
        return self.store.index()

    async def load(self, name: str) -> None:
        """Load, or load again, a model of the model directory while serving the others."""
        await self.store.load(name)

    async def unload(self, name: str) -> None:
        """Stop serving a model once its queued images are answered."""
        await self.store.unload(name)

    async def decode(self, data: bytes, content_type: str | None, spec: InputSpec, name: str) -> torch.Tensor:
        """Decode an encoded image for a model's input in a decoding thread; errors start with ``name``.

        The header is read first; a large image then waits for one of TSC_MAX_LARGE_DECODES slots, so that
        large decodes never take every decoding thread from small ones, and the last of a run of them hands
        the memory they freed back to the operating system.
        """
        if self._decoding is None:
            raise NotReady("the server is starting")
        settings, loop = self.settings, asyncio.get_running_loop()
        limits = (settings.max_image_pixels, settings.full_decode_pixels(spec.height, spec.width))
        side = max(spec.height, spec.width)
        try:
            image = await loop.run_in_executor(self._decoding, open_image, data, content_type, side, *limits)
            decode = (self._decoding, decode_pixels, image, spec.channels, spec.height, spec.width)
            if not is_large(image):
                return await loop.run_in_executor(*decode)
            self._large_pending += 1
            try:
                async with self._large_decodes:
                    return await loop.run_in_executor(*decode)
            finally:
                self._large_pending -= 1
                if self._large_pending == 0:
                    loop.run_in_executor(self._decoding, release_memory)  # after the answer, off the loop
        except ServiceError as exc:
            raise type(exc)(f"{name}: {exc.detail}") from exc

    async def infer(
        self,
        served: ServedModel,
        images: Sequence[torch.Tensor],
        engine: str,
        compare: bool | None,
        raster: bool = False,
        client: str = "",
    ) -> Inference:
        """Run ``images`` (decoded for ``served``) on ``engine``, with rasters and baselines when asked
        (``compare`` None: as the model's settings say, else not).

        Every image runs on every engine or none: each engine's lane is checked for room before any is
        queued. ``client`` names the caller for the batcher's per-client share of the queue.
        """
        own = served.settings
        if not own.allows(engine):
            allowed = ", ".join(own.engines or ())
            raise EngineNotAllowed(f"model {served.name!r} does not run engine {engine!r}, only {allowed}")
        if compare is None:
            compare = bool(own.compare)
        engines = (engine, *BASELINES) if compare else (engine,)
        lanes: dict[str, list[str]] = {}
        for name in engines:
            lanes.setdefault(ENGINES[name].lane, []).append(name)
        for lane, named in lanes.items():
            served.batchers[lane].ensure_room(len(images) * len(named), client)
        rastered = (engine,) if raster else ()
        answers = await asyncio.gather(
            *(served.batchers[lane].submit(images, named, rastered, client) for lane, named in lanes.items())
        )
        outcomes = {
            name: runs
            for named, per_engine in zip(lanes.values(), answers, strict=True)
            for name, runs in zip(named, per_engine, strict=True)
        }
        for name, runs in outcomes.items():
            if ENGINES[name].spikes:
                for outcome in runs:
                    self.metrics.observe_costs(served.name, name, outcome.result)
        return Inference(served, engine, outcomes)
