"""tsc-snn converter: trained PyTorch CNN -> Temporal-Switch-Coding spiking network.

The public names are imported on first use, so that a light submodule (``converter.system``, which the
service's settings and its healthcheck use) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from converter.checkpoint import CheckpointError
    from converter.network import InputSpec, SpikingNetwork, load
    from converter.pipeline import convert
    from converter.results import LayerCounts, RunResult
    from converter.trace import ConversionError

_HOMES = {
    "CheckpointError": "converter.checkpoint",
    "ConversionError": "converter.trace",
    "InputSpec": "converter.network",
    "LayerCounts": "converter.results",
    "RunResult": "converter.results",
    "SpikingNetwork": "converter.network",
    "convert": "converter.pipeline",
    "load": "converter.network",
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


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module 'converter' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
