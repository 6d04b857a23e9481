"""tsc-snn converter: trained PyTorch CNN -> Temporal-Switch-Coding spiking network."""

from converter.checkpoint import CheckpointError
from converter.network import InputSpec, SpikingNetwork, load
from converter.pipeline import convert
from converter.results import LayerCounts, RunResult
from converter.trace import ConversionError

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
