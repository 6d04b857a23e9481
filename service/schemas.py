"""Pydantic models of every request option and response body (they make the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import File, UploadFile
from pydantic import BaseModel, Field

from converter.snn import ENGINES, TSC_ENGINES
from service.execute import RASTER_NEURONS_PER_LAYER
from service.registry import MODEL_NAME_PATTERN


class ErrorResponse(BaseModel):
    """Body of every error response."""

    error: str = Field(description="Stable machine-readable code, e.g. invalid_image or queue_full.")
    detail: str | list[dict[str, Any]] = Field(
        description="What went wrong; for 422 one entry per bad field."
    )


class ClassifyOptions(BaseModel):
    """Options of /classify and /classify/batch: query parameters or form fields (a form field wins)."""

    model: str | None = Field(
        None, pattern=MODEL_NAME_PATTERN, description="Model to use (GET /models); default TSC_DEFAULT_MODEL."
    )
    top_k: int = Field(
        5, ge=1, le=1000, description="Classes to return, best first (capped at the class count)."
    )
    engine: Literal[TSC_ENGINES] = Field(  # type: ignore[valid-type]
        "fast", description="; ".join(f"{n}: {ENGINES[n].summary}" for n in TSC_ENGINES) + "."
    )
    compare: bool | None = Field(
        None,
        description="Also run the ANN and a rate-coded SNN on the image and report them (unset: as the "
        "model's settings say, else false).",
    )
    raster: bool = Field(
        False,
        description="Also return the image's spike raster: on- and off-spike steps of a fixed sample of at "
        f"most {RASTER_NEURONS_PER_LAYER} neurons of the input and of each neuron layer, with its window.",
    )


class ClassifyForm(ClassifyOptions):
    """Multipart body of /classify: the image, and any option as a form field."""

    file: UploadFile = File(description="JPEG, PNG, WebP, BMP or GIF (first frame), any size and mode.")


class BatchForm(ClassifyOptions):
    """Multipart body of /classify/batch: the images, each a 'files' part, and any option as a form field."""

    files: list[UploadFile] = File(
        min_length=1, description="Images to classify, in the order results come back."
    )


class Prediction(BaseModel):
    """One class and its softmax probability."""

    label: str
    index: int = Field(description="Class index in the model's label list.")
    probability: float


class ModelRef(BaseModel):
    """The model and engine that produced an answer."""

    name: str
    version: str
    T: int = Field(description="TSC time steps of the longest layer window (of every window when uniform).")
    engine: str


class Latency(BaseModel):
    """Time the answer took, in simulated time steps and in server wall-clock time."""

    timesteps: int = Field(
        description="SNN latency in time steps until the output is read: the sum of the layer windows "
        "along the longest path (layers x T when every window is T)."
    )
    server_ms: float = Field(description="Wall time from the request's arrival to this response.")
    queue_ms: float = Field(description="Time the image waited for its batch.")
    inference_ms: float = Field(description="Engine time of the batch the image ran in.")
    batch_size: int = Field(description="Images in that batch.")


class LayerSpikes(BaseModel):
    """Counts of one population: input pixels, a neuron layer, a max-pool switch or the output layer."""

    name: str
    kind: str
    neurons: int
    spikes: int
    synaptic_additions: int = Field(description="Additions the population's spikes cause downstream.")
    neuron_updates: int


class Spikes(BaseModel):
    """Spikes the image caused, in total and per population."""

    total: int
    per_neuron: float = Field(description="Total spikes over the number of neurons (all populations).")
    layers: list[LayerSpikes]


class Energy(BaseModel):
    """Energy estimate from operation counts; the constants are named so the figure can be recomputed."""

    snn_pj: float = Field(description="(synaptic_additions + neuron_updates) x add_pj.")
    ann_pj: float = Field(description="ann_macs x mac_pj: the same network run as the original ANN.")
    ann_over_snn: float | None = Field(
        description="ann_pj / snn_pj: how many times less energy the SNN needs (null when snn_pj is 0)."
    )
    add_pj: float
    mac_pj: float
    source: str


class Operations(BaseModel):
    """Work the SNN did for the image, and the ANN's for comparison."""

    synaptic_additions: int
    memory_accesses: int = Field(description="Weight reads: one per synaptic event.")
    neuron_updates: int
    ann_macs: int = Field(description="Multiply-accumulates of the ANN forward pass on one image.")
    energy: Energy


class AnnFigures(BaseModel):
    """The original ANN's answer for the same image."""

    predictions: list[Prediction]
    agrees: bool = Field(description="Same top-1 class as the SNN answer.")
    macs: int
    energy_pj: float


class RateFigures(BaseModel):
    """A rate-coded SNN's answer for the same image (the classic conversion TSC is compared with)."""

    predictions: list[Prediction]
    agrees: bool = Field(description="Same top-1 class as the SNN answer.")
    timesteps: int
    spikes: int
    synaptic_additions: int
    neuron_updates: int
    energy_pj: float


class Comparison(BaseModel):
    """ANN and rate-coded figures, present when compare=true."""

    ann: AnnFigures
    rate: RateFigures


class RasterLayer(BaseModel):
    """A fixed sample of one layer's neurons and the steps each spikes on and off."""

    name: str
    kind: str = Field(description="input or neuron.")
    start: int = Field(description="The first step of the layer's window.")
    end: int = Field(description="The step the window ends.")
    neurons: list[int] = Field(
        description=f"Flat indices of at most {RASTER_NEURONS_PER_LAYER} sampled neurons, ascending, the "
        "same sample for every image."
    )
    on: list[int | None] = Field(
        description="Each sampled neuron's on-spike step, end - duration, in [start, end); null when silent."
    )
    off: int = Field(description="The off-spike step of every neuron that spiked on: the window's end.")


class Classification(BaseModel):
    """The answer for one image and what it cost."""

    filename: str | None
    model: ModelRef
    predictions: list[Prediction]
    latency: Latency
    spikes: Spikes
    operations: Operations
    comparison: Comparison | None = None
    raster: list[RasterLayer] | None = Field(
        None, description="With raster=true: the input's and each neuron layer's sampled spikes, in order."
    )


class BatchClassification(BaseModel):
    """One answer per uploaded file, in upload order."""

    results: list[Classification]


class InputInfo(BaseModel):
    """Pixels a model takes: RGB for 3 channels, greyscale for 1, values in [0, 1]."""

    channels: int
    height: int
    width: int


class ModelSummary(BaseModel):
    """A loaded model."""

    name: str
    version: str
    T: int = Field(description="The longest layer window, in steps.")
    windows: dict[str, int] = Field(description="Steps of each layer's window: input and every neuron layer.")
    timesteps: int = Field(description="Latency: the sum of windows along the longest path.")
    classes: int
    input: InputInfo
    default: bool = Field(description="Used when a request names no model.")


class ModelList(BaseModel):
    """Loaded models, and the checkpoints that failed to load with the reason."""

    default_model: str | None
    models: list[ModelSummary]
    failed: dict[str, str]
    not_ready: str | None = Field(
        None, description="Why the service is not ready, in full (/readyz gives only a generic reason)."
    )


class ModelDetail(ModelSummary):
    """A loaded model with its labels and whole manifest (accuracy table, provenance, calibration, ...)."""

    versions: list[str] = Field(description="Every version served; requests that name none get the latest.")
    settings: dict[str, Any] = Field(
        description="What the model's settings.json sets (batching, engines allowed, compare default)."
    )
    labels: list[str]
    manifest: dict[str, Any]


class Liveness(BaseModel):
    """The process is up."""

    status: Literal["alive"] = "alive"


class Readiness(BaseModel):
    """Every model is loaded and warmed up."""

    status: Literal["ready"] = "ready"
    default_model: str
    models: list[str]
