"""``SpikingNetwork``: a converted network (``converter.snn.model``) that runs on any engine and saves itself.

It adds to the data only what users call on it: ``run`` (an engine of ``converter.snn.engines.ENGINES``),
``run_rate`` (the rate-coded baseline at several latencies in one simulation), ``save``; ``load`` reads one
back. Engines and checkpoints see the data class only, so nothing below this module imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from converter.snn import checkpoint, engines
from converter.snn.checkpoint import CheckpointError
from converter.snn.model import InputSpec, Network
from converter.snn.results import RunResult

__all__ = ["CheckpointError", "InputSpec", "SpikingNetwork", "load"]


class SpikingNetwork(Network):
    """A TSC spiking network converted from an ANN."""

    def run(
        self,
        images: Tensor,
        engine: str = "fast",
        rate_steps: int = 256,
        keep_durations: bool = False,
        rate_v0: float = 0.0,
    ) -> RunResult:
        """Classify a batch of pixels in [0, 1] with an engine of ``ENGINES``: logits and spec 6's counts."""
        return engines.run(self, images, engine, engines.RunOptions(rate_steps, rate_v0, keep_durations))

    def run_rate(self, images: Tensor, steps: list[int], v0: float = 0.0) -> list[RunResult]:
        """The rate-coded baseline read out after each of ``steps`` in one simulation, neurons from ``v0``."""
        return engines.run_rate(self, images, steps, v0)

    def save(self, path: str | Path) -> dict[str, Any]:
        """Write a checkpoint directory (or one ``.safetensors`` file); returns the manifest written."""
        return checkpoint.write(self, path)


def load(path: str | Path) -> SpikingNetwork:
    """Load and verify a checkpoint written by ``SpikingNetwork.save``."""
    parts = checkpoint.read(path)
    manifest = parts.pop("manifest")
    try:
        net = SpikingNetwork(**parts)
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: manifest is incomplete or inconsistent ({type(e).__name__}: {e})"
        ) from None
    if manifest.get("T", net.T) != net.T or net.timesteps != manifest.get("latency_steps", net.timesteps):
        raise CheckpointError(f"{path}: T and latency_steps disagree with the windows")
    return net
