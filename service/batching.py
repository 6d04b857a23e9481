"""Dynamic batching: concurrent requests for one model are queued and run together in a worker thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from service.errors import NotReady, QueueFull
from service.metrics import Metrics

R = TypeVar("R")
Infer = Callable[[torch.Tensor, str, bool], Sequence[R]]  # images, engine, raster -> results


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """One image's result with the time it queued, its batch's engine time and that batch's size."""

    result: R
    queue_s: float
    inference_s: float
    batch_size: int


@dataclass
class _Job(Generic[R]):
    image: torch.Tensor
    engine: str
    raster: bool
    future: asyncio.Future[Outcome[R]]
    enqueued: float


class Batcher(Generic[R]):
    """Bounded queue of images for one model, drained in batches of up to ``max_batch_size``.

    A batch closes when it is full or ``max_delay_s`` after its first image arrived; its images are grouped by
    engine (and raster) and each group is run by ``infer`` on ``executor``, never on the event loop.
    """

    def __init__(
        self,
        model: str,
        infer: Infer[R],
        executor: Executor,
        metrics: Metrics,
        max_batch_size: int,
        max_delay_s: float,
        max_queue_size: int,
        lane: str = "interactive",
    ) -> None:
        self.model, self.lane = model, lane
        self._infer = infer
        self._executor = executor
        self._metrics = metrics
        self._max_batch_size = max_batch_size
        self._max_delay_s = max_delay_s
        self._queue: asyncio.Queue[_Job[R]] = asyncio.Queue(max_queue_size)
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{model}")

    async def submit(
        self, images: Sequence[torch.Tensor], engines: Sequence[str], raster: Collection[str] = ()
    ) -> list[list[Outcome[R]]]:
        """Queue each image once per engine (all or none), rasters on ``raster``'s; outcomes per engine."""
        if self._closing:
            raise NotReady("the server is shutting down")
        self.ensure_room(len(images) * len(engines))
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        jobs = [
            [_Job(image, engine, engine in raster, loop.create_future(), now) for image in images]
            for engine in engines
        ]
        for job in (job for group in jobs for job in group):
            self._queue.put_nowait(job)
        self._metrics.queue_depth.labels(self.model, self.lane).set(self._queue.qsize())
        return [list(await asyncio.gather(*(job.future for job in group))) for group in jobs]

    def has_room(self, n: int) -> bool:
        """Whether ``n`` more images fit in the queue now."""
        return self._queue.maxsize - self._queue.qsize() >= n

    def ensure_room(self, n: int) -> None:
        """Raise QueueFull unless ``n`` more images fit in the queue now."""
        if not self.has_room(n):
            raise QueueFull(f"the {self.lane} queue of model {self.model!r} is full; retry shortly")

    async def close(self) -> None:
        """Refuse new work, finish every queued image, then stop."""
        self._closing = True
        await self._queue.join()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            self._metrics.queue_depth.labels(self.model, self.lane).set(self._queue.qsize())
            for engine, raster in dict.fromkeys((job.engine, job.raster) for job in batch):
                group = [job for job in batch if (job.engine, job.raster) == (engine, raster)]
                await self._run_group(group, engine, raster)
            for _ in batch:
                self._queue.task_done()

    async def _collect(self) -> list[_Job[R]]:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self._max_delay_s
        while len(batch) < self._max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    def _stacked(self, images: list[torch.Tensor], engine: str, raster: bool) -> Sequence[R]:
        return self._infer(torch.stack(images), engine, raster)

    async def _run_group(self, jobs: list[_Job[R]], engine: str, raster: bool) -> None:
        jobs = [job for job in jobs if not job.future.done()]  # drop images whose client went away
        if not jobs:
            return
        started = time.perf_counter()
        images = [job.image for job in jobs]
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._stacked, images, engine, raster
            )
        except Exception as exc:
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        seconds = time.perf_counter() - started
        self._metrics.inference_duration.labels(self.model, engine).observe(seconds)
        self._metrics.batch_size.labels(self.model, engine).observe(len(jobs))
        for job, result in zip(jobs, results, strict=True):
            queued = started - job.enqueued
            self._metrics.queue_duration.labels(self.model).observe(queued)
            if not job.future.done():
                job.future.set_result(Outcome(result, queued, seconds, len(jobs)))
