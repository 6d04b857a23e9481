"""What the routes share: settings, metrics, the model store and the worker threads the lifespan starts."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, TypeVar

import torch
from fastapi import Depends, Request, UploadFile

from converter import InputSpec
from converter.engines import ENGINES
from converter.system import available_cores
from service.dataplane import DataPlane
from service.errors import ClientDisconnected, ServiceError
from service.images import decode_pixels, is_large, open_image, release_memory
from service.metrics import Metrics
from service.registry import ModelStore
from service.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
# C0 and C1 controls, DEL, and the bidirectional marks, embeddings, overrides and isolates
UNSAFE_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
MAX_FILENAME = 255


class Runtime:
    """Owns the inference threads (one per lane, TSC_TORCH_THREADS torch threads each) and decoders."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.store = ModelStore(settings, self.metrics)
        self.dataplane = DataPlane(self.store, self.metrics)
        self._inference: dict[str, ThreadPoolExecutor] = {}
        self._decoding: ThreadPoolExecutor | None = None
        self._large_decodes = asyncio.Semaphore(settings.max_large_decodes)
        self._large_pending = 0  # large decodes waiting or running
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
        return await self.decode_bytes(
            data, upload.content_type, spec, safe_filename(upload.filename) or "upload"
        )

    async def decode_bytes(
        self, data: bytes, content_type: str | None, spec: InputSpec, name: str
    ) -> torch.Tensor:
        """Decode an encoded image for a model's input in a decoding thread; errors start with ``name``.

        The header is read first; a large image then waits for one of TSC_MAX_LARGE_DECODES slots, so that
        large decodes never take every decoding thread from small ones, and the last of a run of them hands
        the memory they freed back to the operating system.
        """
        assert self._decoding is not None, "start() first"
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


def client_id(request: Request) -> str:
    """Who sent ``request``, for the per-client share of the batch queues: its remote address."""
    return request.client.host if request.client is not None else ""


def safe_filename(name: str | None) -> str | None:
    """An uploaded file's name fit to echo: no control or bidirectional-override characters, 255 at most."""
    return None if name is None else UNSAFE_CHARACTERS.sub("", name)[:MAX_FILENAME]


async def while_connected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first: then cancel it and raise ClientDisconnected.

    Call it once the request body has been read: from then on the only message the server can send is
    ``http.disconnect``. Cancelling the work takes the request's images off the batch queues.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():  # the client has gone, or this request is cancelled (the server is stopping)
            task.cancel()
            await asyncio.wait((task,))  # until it has taken its images off the queues
    if task.cancelled():
        raise ClientDisconnected("the client closed the connection before its answer was ready")
    return task.result()


async def _disconnected(request: Request) -> None:
    """Return when the server reports that the client has gone."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def get_runtime(request: Request) -> Runtime:
    """The app's runtime (a FastAPI dependency)."""
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
