"""tsc-snn converter: trained PyTorch CNN -> Temporal-Switch-Coding spiking network.

The public names are imported on first use, so that a light submodule (``converter.snn.system``, which the
service's settings and its healthcheck use) does not pull in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from converter.snn.system import lazy_exports

if TYPE_CHECKING:
    from converter.conversion.pipeline import convert
    from converter.conversion.trace import ConversionError
    from converter.snn.checkpoint import CheckpointError
    from converter.snn.model import InputSpec
    from converter.snn.network import SpikingNetwork, load
    from converter.snn.results import LayerCounts, RunResult

_HOMES = {
    "CheckpointError": "converter.snn.checkpoint",
    "ConversionError": "converter.conversion.trace",
    "InputSpec": "converter.snn.model",
    "LayerCounts": "converter.snn.results",
    "RunResult": "converter.snn.results",
    "SpikingNetwork": "converter.snn.network",
    "convert": "converter.conversion.pipeline",
    "load": "converter.snn.network",
}
__all__ = [
    "CheckpointError",
    "ConversionError",
    "InputSpec",
    "LayerCounts",
    "RunResult",
    "SpikingNetwork",
    "convert",
    "load",
]

__getattr__ = lazy_exports(__name__, _HOMES)
