"""Response bodies built from engine outcomes and loaded models."""

from __future__ import annotations

from typing import Any

from converter.snn import E_ADD_PJ, E_MAC_PJ, SOURCE
from service.dataplane import Inference
from service.registry import ServedModel
from service.schemas import (
    AnnFigures,
    Classification,
    Comparison,
    Energy,
    InputInfo,
    Latency,
    LayerSpikes,
    ModelDetail,
    ModelRef,
    ModelSummary,
    Operations,
    Prediction,
    RasterLayer,
    RateFigures,
    Spikes,
)


def top_k(probabilities: list[float], labels: list[str], k: int) -> list[Prediction]:
    """The ``k`` most probable classes, best first."""
    best = sorted(range(len(probabilities)), key=probabilities.__getitem__, reverse=True)[:k]
    return [Prediction(label=labels[i], index=i, probability=probabilities[i]) for i in best]


def classification(
    inference: Inference, i: int, top: int, server_ms: float, filename: str | None
) -> Classification:
    """The answer for image ``i`` of ``inference``: its SNN run, and the baselines' when compared."""
    served = inference.served
    net, snn = served.net, inference.of(inference.engine, i)
    result = snn.result
    layers = [LayerSpikes.model_validate(layer, from_attributes=True) for layer in result.layers]
    neurons = sum(layer.neurons for layer in layers)
    snn_pj, ann_pj = result.energy_pj, result.ann_energy_pj
    predictions = top_k(result.probabilities, net.labels, top)
    return Classification(
        filename=filename,
        model=ModelRef(name=served.name, version=net.version, T=net.T, engine=result.engine),
        predictions=predictions,
        latency=Latency(
            timesteps=result.timesteps,
            server_ms=server_ms,
            queue_ms=snn.queue_s * 1000,
            inference_ms=snn.inference_s * 1000,
            batch_size=snn.batch_size,
        ),
        spikes=Spikes(total=result.spikes, per_neuron=result.spikes / neurons, layers=layers),
        operations=Operations(
            synaptic_additions=result.synaptic_additions,
            memory_accesses=result.memory_accesses,
            neuron_updates=result.neuron_updates,
            ann_macs=net.ann_macs,
            energy=Energy(
                snn_pj=snn_pj,
                ann_pj=ann_pj,
                ann_over_snn=ann_pj / snn_pj if snn_pj else None,
                add_pj=E_ADD_PJ,
                mac_pj=E_MAC_PJ,
                source=SOURCE,
            ),
        ),
        comparison=_comparison(inference, i, top, predictions[0].index) if inference.compared else None,
        raster=None if result.raster is None else [_raster_layer(layer) for layer in result.raster],
    )


def _raster_layer(layer: object) -> RasterLayer:
    return RasterLayer.model_validate(layer, from_attributes=True)


def _comparison(inference: Inference, i: int, top: int, snn_top1: int) -> Comparison:
    served = inference.served
    ann, rate = inference.of("ann", i).result, inference.of("rate", i).result
    labels = served.net.labels
    ann_predictions = top_k(ann.probabilities, labels, top)
    rate_predictions = top_k(rate.probabilities, labels, top)
    return Comparison(
        ann=AnnFigures(
            predictions=ann_predictions,
            agrees=ann_predictions[0].index == snn_top1,
            macs=served.net.ann_macs,
            energy_pj=ann.ann_energy_pj,
        ),
        rate=RateFigures(
            predictions=rate_predictions,
            agrees=rate_predictions[0].index == snn_top1,
            timesteps=rate.timesteps,
            spikes=rate.spikes,
            synaptic_additions=rate.synaptic_additions,
            neuron_updates=rate.neuron_updates,
            energy_pj=rate.energy_pj,
        ),
    )


def model_summary(served: ServedModel, default: str | None) -> ModelSummary:
    """What GET /models lists for one model."""
    return ModelSummary(**_summary_fields(served, default))


def model_detail(served: ServedModel, default: str | None, versions: list[str]) -> ModelDetail:
    """What GET /models/{name} returns: the summary, the versions served, the model's own settings, the
    labels and the whole manifest."""
    return ModelDetail(
        **_summary_fields(served, default),
        versions=versions,
        settings=served.settings.model_dump(exclude_none=True),
        labels=served.net.labels,
        manifest=served.net.manifest,
    )


def _summary_fields(served: ServedModel, default: str | None) -> dict[str, Any]:
    net, spec = served.net, served.net.input_spec
    return {
        "name": served.name,
        "version": net.version,
        "T": net.T,
        "windows": net.windows,
        "timesteps": net.timesteps,
        "classes": len(net.labels),
        "input": InputInfo(channels=spec.channels, height=spec.height, width=spec.width),
        "default": served.name == default,
    }
