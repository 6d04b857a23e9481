"""tsc-snn converter: trained PyTorch CNN -> Temporal-Switch-Coding spiking network.

The public names are imported on first use, so that a light submodule (``converter.snn.system``, which the
service's settings and its healthcheck use) does not pull in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from converter.snn.system import lazy_exports

if TYPE_CHECKING:
    from converter.conversion.model_file import ModelFileError, load_model
    from converter.conversion.pipeline import convert
    from converter.conversion.trace import (
        ConversionError,
        register_function,
        register_method,
        register_module,
    )
    from converter.snn.checkpoint import CheckpointError
    from converter.snn.model import InputSpec
    from converter.snn.network import SpikingNetwork, load
    from converter.snn.results import LayerCounts, RunResult

_HOMES = {
    "CheckpointError": "converter.snn.checkpoint",
    "ConversionError": "converter.conversion.trace",
    "InputSpec": "converter.snn.model",
    "LayerCounts": "converter.snn.results",
    "ModelFileError": "converter.conversion.model_file",
    "RunResult": "converter.snn.results",
    "SpikingNetwork": "converter.snn.network",
    "convert": "converter.conversion.pipeline",
    "load": "converter.snn.network",
    "load_model": "converter.conversion.model_file",
    "register_function": "converter.conversion.trace",
    "register_method": "converter.conversion.trace",
    "register_module": "converter.conversion.trace",
}
__all__ = [
    "CheckpointError",
    "ConversionError",
    "InputSpec",
    "LayerCounts",
    "ModelFileError",
    "RunResult",
    "SpikingNetwork",
    "convert",
    "load",
    "load_model",
    "register_function",
    "register_method",
    "register_module",
]

__getattr__ = lazy_exports(__name__, _HOMES)
