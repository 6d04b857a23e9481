"""Pydantic models of the Open Inference Protocol (KServe / Triton "predict protocol v2") bodies.

Health, server and model metadata, and inference requests and responses with their tensors: in JSON, or
with tensors as raw bytes after the JSON (the binary tensor data extension, ``service.binary``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from converter.snn import ENGINES, TSC_ENGINES

EXTENSIONS = ["binary_tensor_data"]  # the protocol extensions the server metadata names
# request bodies: what the schema does not allow is refused (no unknown keys, no "true" for true) ...
REQUEST = ConfigDict(extra="forbid", strict=True)
# ... except in ``parameters``, which clients fill with their own keys (KServe, Triton): unknown ones are
# ignored, known ones still checked
PARAMETERS = ConfigDict(extra="ignore", strict=True)
OutputDatatype = Literal["FP32", "INT64"]


class V2Error(BaseModel):
    """Body of every error of the /v2 routes."""

    error: str = Field(description="What went wrong.")


class V2Live(BaseModel):
    """Open Inference Protocol server liveness."""

    live: bool


class V2Ready(BaseModel):
    """Open Inference Protocol server readiness."""

    ready: bool


class V2ServerMetadata(BaseModel):
    """Open Inference Protocol server metadata."""

    name: str
    version: str
    extensions: list[str]


class V2Tensor(BaseModel):
    """Open Inference Protocol tensor metadata."""

    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = Field(
        None,
        description="pixels: their range and layout; image: its encoding; baseline outputs: compare=true.",
    )


class V2ModelMetadata(BaseModel):
    """Open Inference Protocol model metadata."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[V2Tensor] = Field(description="Send one of them: pixels or encoded images.")
    outputs: list[V2Tensor]


class V2ModelReady(BaseModel):
    """Open Inference Protocol model readiness."""

    name: str
    ready: bool


class V2InferParameters(BaseModel):
    """Parameters of an inference request (other keys are ignored)."""

    model_config = PARAMETERS

    engine: Literal[TSC_ENGINES] = Field(  # type: ignore[valid-type]
        "fast", description="; ".join(f"{n}: {ENGINES[n].summary}" for n in TSC_ENGINES) + "."
    )
    compare: bool | None = Field(
        None,
        description="Also run the ANN and a rate-coded SNN: adds the ann_ and rate_ outputs (unset: as the "
        "model's settings say, else false).",
    )
    binary_data_output: bool = Field(
        False, description="true: outputs whose own binary_data is unset come as binary data after the JSON."
    )


class V2InputParameters(BaseModel):
    """Parameters of an input tensor (other keys are ignored)."""

    model_config = PARAMETERS

    binary_data_size: int | None = Field(
        None, ge=0, description="The tensor's data is this many bytes after the JSON, in place of data."
    )
    shared_memory_region: str | None = Field(None, description="Refused: the shared memory extension.")


class V2InferInput(BaseModel):
    """One input tensor: ``pixels`` (FP32 [N, C, H, W] in [0, 1]) or ``image`` (BYTES [N], encoded images)."""

    model_config = REQUEST

    name: Literal["pixels", "image"]
    shape: list[int]
    datatype: str
    parameters: V2InputParameters | None = None
    data: list[Any] | None = Field(
        None,
        description="The elements in row-major order, flat or nested as the shape; image: base64 strings. "
        "Absent when parameters.binary_data_size says the data follows the JSON.",
    )


class V2OutputParameters(BaseModel):
    """Parameters of a requested output (other keys are ignored)."""

    model_config = PARAMETERS

    binary_data: bool | None = Field(
        None, description="true: this output comes as binary data after the JSON; unset: binary_data_output."
    )


class V2RequestedOutput(BaseModel):
    """An output the response should hold."""

    model_config = REQUEST

    name: str
    parameters: V2OutputParameters | None = None


class V2InferRequest(BaseModel):
    """Open Inference Protocol inference request."""

    model_config = REQUEST

    id: str | None = Field(None, description="Echoed in the response.")
    model_name: str | None = Field(None, description="When sent (KServe's client does): the URL's model.")
    model_version: str | None = Field(None, description="When sent: the URL's version, if it names one.")
    parameters: V2InferParameters = Field(default_factory=V2InferParameters)
    inputs: list[V2InferInput] = Field(min_length=1, max_length=1, description="One input: pixels or image.")
    outputs: list[V2RequestedOutput] | None = Field(
        None, description="Outputs to return, in this order; default every output the run makes."
    )


class V2OutputTensorParameters(BaseModel):
    """Where a binary output's data is."""

    binary_data_size: int = Field(
        description="Its data is this many bytes after the JSON (and earlier ones)."
    )


class V2OutputTensor(BaseModel):
    """One output tensor, its data flat in row-major order: in JSON, or as binary data after it."""

    name: str
    datatype: OutputDatatype
    shape: list[int]
    parameters: V2OutputTensorParameters | None = None
    data: list[int] | list[float] | None = None


class V2InferResponseParameters(BaseModel):
    """What the run used."""

    engine: str
    compare: bool


class V2InferResponse(BaseModel):
    """Open Inference Protocol inference response."""

    model_name: str
    model_version: str
    id: str | None = None
    parameters: V2InferResponseParameters
    outputs: list[V2OutputTensor]
