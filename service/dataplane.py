"""The use case behind every inference route: pick the model, run the engines, record what they cost.

Routers only translate HTTP (multipart uploads, Open Inference Protocol tensors, the page's requests)
into a call of ``DataPlane.infer`` and its ``Inference`` back into a response body; batching, engine
choice, the compared baselines and metrics live here once, keyed by engine name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from converter.engines import BASELINES, ENGINES
from converter.results import ImageResult
from service.batching import Outcome
from service.errors import ModelNotFound
from service.metrics import Metrics
from service.registry import ModelStore, ServedModel


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


class DataPlane:
    """Runs inference requests on the loaded models."""

    def __init__(self, store: ModelStore, metrics: Metrics) -> None:
        self.store, self.metrics = store, metrics

    def model(self, name: str | None, version: str | None = None) -> ServedModel:
        """The named model (of ``version`` when given), or the default; ``NotReady`` or ``ModelNotFound``."""
        served = self.store.get(name)
        if version is not None and version != served.net.version:
            raise ModelNotFound(
                f"model {served.name!r} has no version {version!r}; it serves version {served.net.version!r}"
            )
        return served

    async def infer(
        self,
        served: ServedModel,
        images: Sequence[torch.Tensor],
        engine: str,
        compare: bool,
        raster: bool = False,
        client: str = "",
    ) -> Inference:
        """Run ``images`` (decoded for ``served``) on ``engine``, with rasters and baselines when asked.

        ``client`` names the caller for the batcher's per-client share of the queue.
        """
        engines = (engine, *BASELINES) if compare else (engine,)
        outcomes = await served.submit(images, engines, raster=(engine,) if raster else (), client=client)
        for name, runs in outcomes.items():
            if ENGINES[name].spikes:
                for outcome in runs:
                    self.metrics.observe_costs(served.name, name, outcome.result)
        return Inference(served, engine, outcomes)
