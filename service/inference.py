"""The bridge to the converter: one batch on one engine, one ``ImageResult`` per image."""

from __future__ import annotations

import torch

from converter import SpikingNetwork
from converter.results import ImageResult


def run_batch(net: SpikingNetwork, images: torch.Tensor, engine: str, rate_steps: int) -> list[ImageResult]:
    """Each image's probabilities and counts from one engine run over a batch (call off the event loop)."""
    with torch.inference_mode():
        return net.run(images, engine=engine, rate_steps=rate_steps).images()


def warm_up(net: SpikingNetwork) -> None:
    """Run one dummy image through the fast engine so the first request does not pay for lazy set-up."""
    spec = net.input_spec
    run_batch(net, torch.zeros(1, spec.channels, spec.height, spec.width), "fast", rate_steps=1)
