"""The runtime: load a converted TSC-SNN, run it on an engine, count what it cost (no conversion code).

This package is what a server needs and all it needs: it imports nothing from ``converter.conversion``
or ``converter.training``. Its public names are imported on first use, so that a light one
(``available_cores``, which the service's settings use) does not pull in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from converter.snn.system import lazy_exports

if TYPE_CHECKING:
    from converter.snn.checkpoint import CheckpointError
    from converter.snn.energy import E_ADD_PJ, E_MAC_PJ, SOURCE, ann_energy_pj, snn_energy_pj
    from converter.snn.engines import BASELINES, ENGINES, TSC_ENGINES
    from converter.snn.engines.exact import guarded_here
    from converter.snn.model import InputSpec
    from converter.snn.network import SpikingNetwork, load
    from converter.snn.raster import RasterLayer, spike_raster
    from converter.snn.results import ImageResult, LayerCounts, LayerImage, RunResult
    from converter.snn.system import available_cores

_HOMES = {
    "CheckpointError": "converter.snn.checkpoint",
    "E_ADD_PJ": "converter.snn.energy",
    "E_MAC_PJ": "converter.snn.energy",
    "SOURCE": "converter.snn.energy",
    "ann_energy_pj": "converter.snn.energy",
    "snn_energy_pj": "converter.snn.energy",
    "BASELINES": "converter.snn.engines",
    "ENGINES": "converter.snn.engines",
    "TSC_ENGINES": "converter.snn.engines",
    "InputSpec": "converter.snn.model",
    "SpikingNetwork": "converter.snn.network",
    "load": "converter.snn.network",
    "guarded_here": "converter.snn.engines.exact",
    "RasterLayer": "converter.snn.raster",
    "spike_raster": "converter.snn.raster",
    "ImageResult": "converter.snn.results",
    "LayerCounts": "converter.snn.results",
    "LayerImage": "converter.snn.results",
    "RunResult": "converter.snn.results",
    "available_cores": "converter.snn.system",
}
__all__ = [
    "BASELINES",
    "ENGINES",
    "E_ADD_PJ",
    "E_MAC_PJ",
    "SOURCE",
    "TSC_ENGINES",
    "CheckpointError",
    "ImageResult",
    "InputSpec",
    "LayerCounts",
    "LayerImage",
    "RasterLayer",
    "RunResult",
    "SpikingNetwork",
    "ann_energy_pj",
    "available_cores",
    "guarded_here",
    "load",
    "snn_energy_pj",
    "spike_raster",
]

__getattr__ = lazy_exports(__name__, _HOMES)
