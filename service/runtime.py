"""What the routes share: settings, metrics, the model store and the worker threads the lifespan starts."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import torch
from fastapi import Depends, Request, UploadFile

from converter import InputSpec
from converter.engines import ENGINES
from converter.system import available_cores
from service.dataplane import DataPlane
from service.errors import ServiceError
from service.images import decode_image
from service.metrics import Metrics
from service.registry import ModelStore
from service.settings import Settings

log = logging.getLogger(__name__)


class Runtime:
    """Owns the inference threads (one per lane, TSC_TORCH_THREADS torch threads each) and decoders."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.store = ModelStore(settings, self.metrics)
        self.dataplane = DataPlane(self.store, self.metrics)
        self._inference: dict[str, ThreadPoolExecutor] = {}
        self._decoding: ThreadPoolExecutor | None = None
        self._loading: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the worker threads and load models in the background (so /livez answers meanwhile)."""
        threads = self.settings.torch_threads
        torch.set_num_threads(threads)
        self._inference = {
            lane: ThreadPoolExecutor(1, f"tsc-{lane}", initializer=torch.set_num_threads, initargs=(threads,))
            for lane in dict.fromkeys(e.lane for e in ENGINES.values())
        }
        self._decoding = ThreadPoolExecutor(available_cores(), "tsc-decode")
        self._loading = asyncio.get_running_loop().create_task(self.store.load_all(self._inference))
        log.info("torch uses %d threads; loading models from %s", threads, self.settings.model_dir)

    async def wait_loaded(self) -> None:
        """Return once start-up loading has finished, whatever its outcome."""
        assert self._loading is not None, "start() first"
        await asyncio.shield(self._loading)

    async def stop(self) -> None:
        """Finish queued work, then release the threads (uvicorn has already let in-flight requests end)."""
        await self.wait_loaded()
        await self.store.close()
        assert self._decoding is not None
        for pool in (self._decoding, *self._inference.values()):
            pool.shutdown(wait=True)
        log.info("stopped")

    async def decode(self, upload: UploadFile, spec: InputSpec) -> torch.Tensor:
        """Read an upload and decode it for a model's input in a decoding thread; errors name the file."""
        data = await upload.read()
        return await self.decode_bytes(data, upload.content_type, spec, upload.filename or "upload")

    async def decode_bytes(
        self, data: bytes, content_type: str | None, spec: InputSpec, name: str
    ) -> torch.Tensor:
        """Decode an encoded image for a model's input in a decoding thread; errors start with ``name``."""
        assert self._decoding is not None, "start() first"
        args = (data, content_type, spec.channels, spec.height, spec.width, self.settings.max_image_pixels)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._decoding, decode_image, *args)
        except ServiceError as exc:
            raise type(exc)(f"{name}: {exc.detail}") from exc


def get_runtime(request: Request) -> Runtime:
    """The app's runtime (a FastAPI dependency)."""
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
