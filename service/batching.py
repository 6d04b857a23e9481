"""Dynamic batching: concurrent requests for one model are queued and run together in a worker thread.

An idle lane runs what arrives at once; images that arrive while a batch runs wait for it and then up to
``max_delay_s`` for more, so batches fill under load without slowing a lone request down. One client (a
remote address) may fill only its share of the queue, so others are still served. When a request is
cancelled (its client went away, or the server is stopping) its images leave the queue at once, and a batch
whose every requester has gone is not run.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from service.errors import NotReady, QueueFull
from service.metrics import Metrics

R = TypeVar("R")
RunBatch = Callable[[list[torch.Tensor], str, bool], Sequence[R]]  # images, engine, raster -> results


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """One image's result with the time it queued, its batch's engine time and that batch's size."""

    result: R
    queue_s: float
    inference_s: float
    batch_size: int


@dataclass(eq=False)
class _Job(Generic[R]):
    image: torch.Tensor
    engine: str
    raster: bool
    client: str
    future: asyncio.Future[Outcome[R]]
    enqueued: float
    queued: bool = True


class Batcher(Generic[R]):
    """Bounded queue of images for one model and lane, drained in batches of up to ``max_batch_size``.

    A batch's images are grouped by engine (and raster) and each group is run by ``run_batch`` on
    ``executor`` (a worker thread or process: ``service.workers``), never on the event loop. At most
    ``max_queue_size`` images wait, at most ``client_queue_size`` of them (default: all) from one client.
    """

    def __init__(
        self,
        model: str,
        run_batch: RunBatch[R],
        executor: Executor,
        metrics: Metrics,
        max_batch_size: int,
        max_delay_s: float,
        max_queue_size: int,
        lane: str = "interactive",
        client_queue_size: int | None = None,
    ) -> None:
        self.model, self.lane = model, lane
        self._run_batch = run_batch
        self.executor = executor
        self._metrics = metrics
        self._max_batch_size = max_batch_size
        self._max_delay_s = max_delay_s
        self._max_queue_size = max_queue_size
        self._client_queue_size = max_queue_size if client_queue_size is None else client_queue_size
        self._pending: deque[_Job[R]] = deque()
        self._by_client: Counter[str] = Counter()
        self._arrived = asyncio.Event()
        self._drained = asyncio.Event()  # nothing queued and no batch running
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{model}-{lane}")

    async def submit(
        self,
        images: Sequence[torch.Tensor],
        engines: Sequence[str],
        raster: Collection[str] = (),
        client: str = "",
    ) -> list[list[Outcome[R]]]:
        """Queue each image once per engine (all or none), rasters on ``raster``'s; outcomes per engine.

        Cancelling the call takes its images that have not started off the queue.
        """
        if self._closing:
            raise NotReady("the server is shutting down")
        self.ensure_room(len(images) * len(engines), client)
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        jobs = [
            [_Job(image, engine, engine in raster, client, loop.create_future(), now) for image in images]
            for engine in engines
        ]
        queued = [job for group in jobs for job in group]
        self._pending.extend(queued)
        self._by_client[client] += len(queued)
        self._drained.clear()
        self._arrived.set()
        self._observe_depth()
        try:
            await asyncio.gather(*(job.future for job in queued))
        except BaseException:  # cancelled, or one image failed: the rest need not run
            for job in queued:
                job.future.cancel()
                self._unqueue(job)
            self._observe_depth()
            raise
        return [[job.future.result() for job in group] for group in jobs]

    @property
    def waiting(self) -> int:
        """Images in the queue now, not yet taken into a batch."""
        return len(self._pending)

    def ensure_room(self, n: int, client: str = "") -> None:
        """Raise QueueFull unless ``n`` more images from ``client`` fit in the queue now."""
        problem = self._no_room(n, client)
        if problem is not None:
            raise QueueFull(problem)

    def _no_room(self, n: int, client: str) -> str | None:
        """Why ``n`` more images from ``client`` do not fit now (None when they do)."""
        queue = f"the {self.lane} queue of model {self.model!r}"
        if len(self._pending) + n > self._max_queue_size:
            return f"{queue} is full; retry shortly"
        waiting = self._by_client[client]
        if waiting + n > self._client_queue_size:
            return (
                f"{waiting} images of this client already wait in {queue}, which takes at most "
                f"{self._client_queue_size} from one client; retry once they are answered"
            )
        return None

    async def close(self) -> None:
        """Refuse new work, finish every queued image, then stop."""
        self._closing = True
        await self._drained.wait()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def _unqueue(self, job: _Job[R]) -> None:
        """Take ``job`` off the queue if it is still there."""
        if job.queued:
            self._pending.remove(job)
            self._taken(job)

    def _taken(self, job: _Job[R]) -> None:
        """Count ``job`` as no longer queued."""
        job.queued = False
        self._by_client[job.client] -= 1
        if self._by_client[job.client] <= 0:
            del self._by_client[job.client]

    def _observe_depth(self) -> None:
        """Publish the queue's depth."""
        self._metrics.observe_queue_depth(self.model, self.lane, self.waiting)

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            self._observe_depth()
            for engine, raster in dict.fromkeys((job.engine, job.raster) for job in batch):
                group = [job for job in batch if (job.engine, job.raster) == (engine, raster)]
                await self._run_group(group, engine, raster)

    async def _collect(self) -> list[_Job[R]]:
        """The next batch: at once when the lane was idle, else filled for up to ``max_delay_s``."""
        busy = bool(self._pending)  # images queued while the last batch ran: more are likely on their way
        batch: list[_Job[R]] = []
        while not batch:
            if not self._pending:
                self._drained.set()
                self._arrived.clear()
                await self._arrived.wait()
            self._take(batch)
        deadline = time.perf_counter() + self._max_delay_s
        while busy and len(batch) < self._max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
            self._take(batch)
        return batch

    def _take(self, batch: list[_Job[R]]) -> None:
        """Move queued images whose requester is still waiting into ``batch``, up to a full batch."""
        while self._pending and len(batch) < self._max_batch_size:
            job = self._pending.popleft()
            self._taken(job)
            if not job.future.done():
                batch.append(job)

    async def _run_group(self, jobs: list[_Job[R]], engine: str, raster: bool) -> None:
        jobs = [job for job in jobs if not job.future.done()]  # drop images whose requester went away
        if not jobs:
            return
        started = time.perf_counter()
        images = [job.image for job in jobs]
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self.executor, self._run_batch, images, engine, raster
            )
        except Exception as exc:
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        seconds = time.perf_counter() - started
        queued = [started - job.enqueued for job in jobs]
        self._metrics.observe_batch(self.model, engine, seconds, queued)
        for job, result, waited in zip(jobs, results, queued, strict=True):
            if not job.future.done():
                job.future.set_result(Outcome(result, waited, seconds, len(jobs)))
