"""Where the engines run: one worker per lane, a process of its own (the default) or a thread.

An engine's batch is a few dozen torch calls per layer with Python between them, and that Python holds the
interpreter lock: in the server's own process it takes turns with the event loop that parses requests and
decodes images, so the server used about one core of two. In a process of its own (``spawn``, so no state is
inherited) a lane's engine has its own interpreter; images go to it and ``ImageResult``s come back through
its pipe (a batch of 64 CIFAR images is 0.8 MB each way; the results are small).

Both kinds are ``concurrent.futures`` executors on which the store calls the module-level functions below, so
one code path loads and runs networks whichever kind runs them: ``load_network`` keeps a network in the
worker's table under a key, ``run`` runs a batch on it, ``unload`` forgets it. A process worker remembers what
it loaded: if its process dies (killed, out of memory) the batch it ran fails with 503 and a new process
loads the same networks before it runs anything else. Stopping a process worker ends its process at once,
abandoning a batch it still runs; a worker whose server process is gone ends itself.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Literal

import torch

from converter.snn import ImageResult, SpikingNetwork, load
from service.errors import EngineFailed
from service.execute import run_batch, warm_up

log = logging.getLogger(__name__)

WorkerKind = Literal["process", "thread"]
STOP_S = 1.0  # how long stopping without waiting lets an idle process end by itself
PARENT_POLL_S = 0.5  # how often a worker process checks that the server process still runs

_NETWORKS: dict[str, SpikingNetwork] = {}  # this process's networks by key (a worker's own table)


def load_network(key: str, path: Path, dtype: str, device: str) -> SpikingNetwork:
    """Load a checkpoint into this worker's table under ``key``, cast and warmed up (runs in the worker)."""
    net = load(path).to(getattr(torch, dtype), torch.device(device))
    warm_up(net)
    _NETWORKS[key] = net
    return net


def unload(key: str) -> None:
    """Forget the network under ``key`` (runs in the worker)."""
    _NETWORKS.pop(key, None)


def run(
    key: str, images: Sequence[torch.Tensor], engine: str, raster: bool, rate_steps: int
) -> list[ImageResult]:
    """One batch of images on the network under ``key`` (runs in the worker)."""
    return run_batch(_NETWORKS[key], torch.stack(list(images)), engine, raster, rate_steps)


def _start_process(threads: int, server: int) -> None:
    """A worker process's start: its torch threads, and a watch that ends it when the server process is
    gone (killed, say: its pipes would keep the worker waiting forever)."""
    torch.set_num_threads(threads)
    threading.Thread(target=_end_with, args=(server,), name="server-watch", daemon=True).start()


def _end_with(server: int) -> None:
    """End this process once its parent is no longer ``server``."""
    while os.getppid() == server:
        time.sleep(PARENT_POLL_S)
    os._exit(0)


class ProcessWorker(Executor):
    """A lane's engine process: an executor of one process that is started again, with the networks it had
    loaded, when it dies; calls that were running or queued in the dead process fail with ``EngineFailed``."""

    def __init__(self, lane: str, threads: int) -> None:
        self.lane, self._threads = lane, threads
        self._lock = threading.Lock()
        self._loaded: dict[str, tuple[Any, ...]] = {}  # key -> load_network's arguments, replayed on restart
        self._pool, self._pid = self._new_pool()

    def _new_pool(self) -> tuple[ProcessPoolExecutor, Future[int]]:
        """A pool of one new process, and its process id (the first thing it runs)."""
        context = multiprocessing.get_context("spawn")
        server = (self._threads, os.getpid())
        pool = ProcessPoolExecutor(1, context, initializer=_start_process, initargs=server)
        return pool, pool.submit(os.getpid)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` in the process (``fn`` and its arguments must pickle)."""
        if fn is load_network:
            self._loaded[args[0]] = args
        elif fn is unload:
            self._loaded.pop(args[0], None)
        with self._lock:
            try:
                pool, inner = self._pool, self._pool.submit(fn, *args, **kwargs)
            except BrokenProcessPool:
                self._restart()
                pool, inner = self._pool, self._pool.submit(fn, *args, **kwargs)
        outer: Future[Any] = Future()
        inner.add_done_callback(lambda done: self._settle(done, outer, pool))
        return outer

    def _settle(self, inner: Future[Any], outer: Future[Any], pool: ProcessPoolExecutor) -> None:
        """Pass ``inner``'s outcome on; a dead process becomes ``EngineFailed`` and a new process."""
        if inner.cancelled():
            outer.cancel()
            return
        error = inner.exception()
        if isinstance(error, BrokenProcessPool):
            with self._lock:
                if pool is self._pool:  # the first failed call restarts it; later ones see the new pool
                    log.error("the %s engine process died; starting a new one", self.lane)
                    self._restart()
            error = EngineFailed(f"the {self.lane} engine process stopped while running this batch; retry")
        if error is not None:
            outer.set_exception(error)
        else:
            outer.set_result(inner.result())

    def _restart(self) -> None:
        """A new process (the lock held), loading again every network the dead one had."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool, self._pid = self._new_pool()
        for args in self._loaded.values():
            self._pool.submit(load_network, *args)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the process after its work; without ``wait``, a batch still running after ``STOP_S`` is
        abandoned: the process is ended (torch cannot be asked to stop)."""
        options = {"cancel_futures": cancel_futures}
        stopping = threading.Thread(target=self._pool.shutdown, kwargs=options, daemon=True)
        stopping.start()
        stopping.join(None if wait else STOP_S)
        if stopping.is_alive() and self._pid.done() and self._pid.exception() is None:
            log.warning(
                "the %s engine process has not ended within %g s (a batch still running): ending it",
                self.lane,
                STOP_S,
            )
            with contextlib.suppress(ProcessLookupError):  # it has just ended
                os.kill(self._pid.result(), signal.SIGTERM)
            stopping.join(STOP_S)


def distinct(executors: Iterable[Executor]) -> list[Executor]:
    """The workers that each need their own copy of a network: every process, and one of the threads
    (threads share this process's table)."""
    found = list(dict.fromkeys(executors))
    threads = [e for e in found if not isinstance(e, ProcessWorker)]
    return [e for e in found if isinstance(e, ProcessWorker)] + threads[:1]


def start_worker(kind: WorkerKind, lane: str, threads: int) -> Executor:
    """The worker for ``lane``: a process of its own, or a thread of this process."""
    if kind == "process":
        return ProcessWorker(lane, threads)
    return ThreadPoolExecutor(1, f"tsc-{lane}", initializer=torch.set_num_threads, initargs=(threads,))
