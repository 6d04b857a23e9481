"""The dynamic batcher with a fake engine: batching, ordering, engine grouping, back-pressure, shutdown."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from service.batching import Batcher
from service.dataplane import DataPlane
from service.errors import NotReady, QueueFull
from service.metrics import Metrics
from service.registry import ServedModel
from service.settings import Settings

pytestmark = pytest.mark.anyio


class Answer(tuple):
    """(engine, pixel value), with the zero costs the data plane records for a spiking engine's answer."""

    spikes = synaptic_additions = 0
    energy_pj = 0.0


class FakeEngine:
    """Returns (engine, pixel value) per image and records every batch; can be held to build up a queue."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.thread_names: set[str] = set()

    def __call__(self, images: torch.Tensor, engine: str, raster: bool) -> Sequence[tuple[str, float]]:
        self.gate.wait(5)
        self.thread_names.add(threading.current_thread().name)
        self.batches.append((engine, len(images)))
        if engine == "broken":
            raise RuntimeError("engine failure")
        return [Answer((engine, float(image[0, 0, 0]))) for image in images]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


def make(engine: FakeEngine, pool: ThreadPoolExecutor, **kwargs: float) -> Batcher:
    options = {"max_batch_size": 8, "max_delay_s": 0.05, "max_queue_size": 64} | kwargs
    return Batcher("m", engine, pool, Metrics(), **options)  # type: ignore[arg-type]


def image(value: float) -> torch.Tensor:
    return torch.full((1, 2, 2), value)


async def test_concurrent_requests_share_a_batch_and_keep_their_order(engine: FakeEngine) -> None:
    with ThreadPoolExecutor(1, "infer") as pool:
        batcher = make(engine, pool)
        results = await asyncio.gather(*(batcher.submit([image(i)], ["fast"]) for i in range(6)))
        await batcher.close()
    assert [r[0][0].result for r in results] == [("fast", float(i)) for i in range(6)]
    assert engine.batches == [("fast", 6)]
    assert all(r[0][0].batch_size == 6 for r in results)
    assert engine.thread_names == {"infer_0"}


async def test_batches_are_capped_at_max_batch_size(engine: FakeEngine) -> None:
    with ThreadPoolExecutor(1) as pool:
        batcher = make(engine, pool, max_batch_size=4)
        (outcomes,) = await batcher.submit([image(i) for i in range(10)], ["fast"])
        await batcher.close()
    assert [o.result[1] for o in outcomes] == list(map(float, range(10)))
    assert [size for _, size in engine.batches] == [4, 4, 2]


async def test_engines_run_in_separate_groups(engine: FakeEngine) -> None:
    with ThreadPoolExecutor(1) as pool:
        batcher = make(engine, pool)
        fast, ann = await batcher.submit([image(1), image(2)], ["fast", "ann"])
        await batcher.close()
    assert [o.result for o in fast] == [("fast", 1.0), ("fast", 2.0)]
    assert [o.result for o in ann] == [("ann", 1.0), ("ann", 2.0)]
    assert sorted(engine.batches) == [("ann", 2), ("fast", 2)]


async def test_a_lone_request_on_an_idle_lane_runs_at_once(engine: FakeEngine) -> None:
    with ThreadPoolExecutor(1) as pool:
        batcher = make(engine, pool, max_delay_s=0.5)
        await asyncio.sleep(0.01)  # the worker is waiting for work
        ((outcome,),) = await batcher.submit([image(0)], ["fast"])
        await batcher.close()
    assert outcome.queue_s < 0.1  # not the half second of the delay


async def test_images_queued_behind_a_batch_wait_up_to_the_delay_for_more(engine: FakeEngine) -> None:
    engine.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        batcher = make(engine, pool, max_delay_s=0.2)
        await asyncio.sleep(0.01)
        first = asyncio.ensure_future(batcher.submit([image(0)], ["fast"]))
        await asyncio.sleep(0.05)  # the first image runs alone, at once, and is held in the engine
        second = asyncio.ensure_future(batcher.submit([image(1)], ["fast"]))
        await asyncio.sleep(0.01)
        engine.gate.set()
        await asyncio.sleep(0.05)  # within the delay that the lane, busy when the second came, now waits
        third = asyncio.ensure_future(batcher.submit([image(2)], ["fast"]))
        results = await asyncio.gather(first, second, third)
        await batcher.close()
    assert engine.batches == [("fast", 1), ("fast", 2)]
    assert [r[0][0].batch_size for r in results] == [1, 2, 2]


async def test_a_full_queue_refuses_all_of_a_request(engine: FakeEngine) -> None:
    engine.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        batcher = make(engine, pool, max_batch_size=1, max_delay_s=0, max_queue_size=3)
        first = asyncio.ensure_future(batcher.submit([image(0)], ["fast"]))
        await asyncio.sleep(0.05)  # the first image is taken from the queue and held in the engine
        waiting = asyncio.ensure_future(batcher.submit([image(1), image(2)], ["fast"]))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await batcher.submit([image(3), image(4)], ["fast"])
        engine.gate.set()
        await asyncio.gather(first, waiting)
        await batcher.close()
    assert [size for _, size in engine.batches] == [1, 1, 1]


async def test_an_engine_failure_reaches_every_caller_and_the_batcher_survives(engine: FakeEngine) -> None:
    with ThreadPoolExecutor(1) as pool:
        batcher = make(engine, pool)
        with pytest.raises(RuntimeError, match="engine failure"):
            await batcher.submit([image(0), image(1)], ["broken"])
        ((outcome,),) = await batcher.submit([image(5)], ["fast"])
        await batcher.close()
    assert outcome.result == ("fast", 5.0)


async def test_close_finishes_queued_work_then_refuses_new_work(engine: FakeEngine) -> None:
    with ThreadPoolExecutor(1) as pool:
        batcher = make(engine, pool, max_delay_s=0.1)
        pending = asyncio.ensure_future(batcher.submit([image(7)], ["fast"]))
        await asyncio.sleep(0)
        await batcher.close()
        ((outcome,),) = await pending
        assert outcome.result == ("fast", 7.0)
        with pytest.raises(NotReady):
            await batcher.submit([image(8)], ["fast"])


async def test_cancelled_requests_are_skipped(engine: FakeEngine) -> None:
    engine.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        batcher = make(engine, pool, max_batch_size=1, max_delay_s=0)
        first = asyncio.ensure_future(batcher.submit([image(0)], ["fast"]))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(batcher.submit([image(1)], ["fast"]))
        await asyncio.sleep(0.01)
        gone.cancel()
        engine.gate.set()
        await first
        await batcher.close()
    assert engine.batches == [("fast", 1)]


class SlowReference(FakeEngine):
    """Holds only the reference engines (stepped, rate) at the gate."""

    def __call__(self, images: torch.Tensor, engine: str, raster: bool) -> Sequence[tuple[str, float]]:
        if engine in ("stepped", "rate"):
            self.gate.wait(5)
        self.batches.append((engine, len(images)))
        return [Answer((engine, float(image[0, 0, 0]))) for image in images]


async def test_reference_engines_never_hold_up_interactive_answers() -> None:
    engine = SlowReference()
    engine.gate.clear()
    with ThreadPoolExecutor(1) as fast_pool, ThreadPoolExecutor(1) as slow_pool:
        lanes = {
            "interactive": make(engine, fast_pool),
            "reference": Batcher("m", engine, slow_pool, Metrics(), 8, 0.05, 64, lane="reference"),
        }
        served = ServedModel("m", Path("m"), None, lanes)  # type: ignore[arg-type]
        dataplane = DataPlane(Settings())
        compared = asyncio.ensure_future(dataplane.infer(served, [image(1)], "fast", compare=True))
        await asyncio.sleep(0.1)  # the rate run is now holding the reference worker
        quick = (await asyncio.wait_for(dataplane.infer(served, [image(2)], "fast", False), 2)).of("fast", 0)
        assert quick.result == ("fast", 2.0) and not compared.done()
        engine.gate.set()
        by_engine = (await compared).outcomes
        assert {e: runs[0].result for e, runs in by_engine.items()} == {
            e: (e, 1.0) for e in ("fast", "ann", "rate")
        }
        await served.close()


async def test_a_full_lane_refuses_the_whole_request(engine: FakeEngine) -> None:
    engine.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        lanes = {
            "interactive": make(engine, pool, max_queue_size=8),
            "reference": Batcher("m", engine, pool, Metrics(), 1, 0, 1, lane="reference"),
        }
        served = ServedModel("m", Path("m"), None, lanes)  # type: ignore[arg-type]
        with pytest.raises(QueueFull, match="reference queue"):  # fast and ann fit, rate does not
            await DataPlane(Settings()).infer(served, [image(0), image(1)], "fast", compare=True)
        assert lanes["interactive"].waiting == 0  # nothing was queued on the lane that had room
        lanes["interactive"].ensure_room(8)
        engine.gate.set()
        await served.close()


async def test_a_cancelled_request_leaves_the_queue_at_once(engine: FakeEngine) -> None:
    engine.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        batcher = make(engine, pool, max_batch_size=4, max_delay_s=0, max_queue_size=4)
        await asyncio.sleep(0.01)
        first = asyncio.ensure_future(batcher.submit([image(0)], ["fast"]))
        await asyncio.sleep(0.05)  # running, held in the engine
        gone = asyncio.ensure_future(batcher.submit([image(i) for i in range(1, 5)], ["fast"]))
        await asyncio.sleep(0.01)
        assert batcher.waiting == 4
        with pytest.raises(QueueFull):
            batcher.ensure_room(1)
        gone.cancel()
        await asyncio.sleep(0.01)
        assert batcher.waiting == 0  # its four images left the queue before the engine was free again
        engine.gate.set()
        await first
        await batcher.close()
    assert engine.batches == [("fast", 1)]


async def test_a_batch_whose_requesters_all_left_is_not_run(engine: FakeEngine) -> None:
    engine.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        batcher = make(engine, pool, max_delay_s=0)
        await asyncio.sleep(0.01)
        # one batch, two engine groups: the fast group is held in the engine when the requester leaves
        gone = asyncio.ensure_future(batcher.submit([image(0), image(1)], ["fast", "ann"]))
        await asyncio.sleep(0.05)
        gone.cancel()
        await asyncio.sleep(0.01)
        engine.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await gone
        await batcher.close()
    assert engine.batches == [("fast", 2)]  # the ann group was never started


async def test_one_client_cannot_fill_the_queue(engine: FakeEngine) -> None:
    engine.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        batcher = make(engine, pool, max_batch_size=1, max_delay_s=0, max_queue_size=8, client_queue_size=4)
        await asyncio.sleep(0.01)
        running = asyncio.ensure_future(batcher.submit([image(0)], ["fast"], client="greedy"))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(
            batcher.submit([image(i) for i in range(4)], ["fast"], client="greedy")
        )
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull, match="4 images of this client already wait"):
            await batcher.submit([image(5)], ["fast"], client="greedy")
        batcher.ensure_room(4, client="polite")
        polite = asyncio.ensure_future(batcher.submit([image(6)], ["fast"], client="polite"))
        engine.gate.set()
        await asyncio.gather(running, waiting, polite)
        batcher.ensure_room(4, client="greedy")  # answered, its share is free again
        await batcher.close()
