"""One batch on one engine in a worker thread: one ``ImageResult`` per image, with its raster when asked."""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from converter.snn import ImageResult, SpikingNetwork, spike_raster

log = logging.getLogger(__name__)
RASTER_NEURONS_PER_LAYER = 32  # the raster's bound: neurons sampled from the input and from each neuron layer


def run_batch(
    net: SpikingNetwork, images: torch.Tensor, engine: str, raster: bool, rate_steps: int
) -> list[ImageResult]:
    """Each image's answer and counts from one engine run on a batch, and its raster when asked (off-loop)."""
    with torch.inference_mode():
        run = net.run(images, engine=engine, rate_steps=rate_steps, keep_durations=raster)
        results = run.images()
        if not raster:
            return results
        if run.durations is None:
            raise ValueError(f"engine {engine!r} has no durations to draw a spike raster from")
        return [
            replace(result, raster=spike_raster(net, run.durations, i, RASTER_NEURONS_PER_LAYER))
            for i, result in enumerate(results)
        ]


def warm_up(net: SpikingNetwork) -> None:
    """Run one dummy image through the fast engine (whose float32 guard splits every layer when it first
    runs) and the raw one, so that the first request does not pay for lazy set-up."""
    spec = net.input_spec
    blank = torch.zeros(1, spec.channels, spec.height, spec.width)
    for engine in ("fast", "raw"):
        run_batch(net, blank, engine, False, rate_steps=1)
