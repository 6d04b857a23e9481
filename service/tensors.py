"""Open Inference Protocol tensors: request inputs to images for a model, engine outcomes to output tensors.

Inputs, one per request: ``pixels``, FP32 [N, C, H, W] with values in [0, 1] (a decoded image / 255), data
flat or nested in row-major order; or ``image``, BYTES [N], each element a JPEG, PNG, WebP, BMP or GIF
(base64 strings in JSON, the file's bytes as binary data), decoded as /classify decodes uploads. Outputs,
per image: ``logits`` and ``probabilities`` (FP32 [N, classes]), and what the TSC run cost: ``timesteps``,
``spikes``, ``synaptic_additions``, ``memory_accesses``, ``neuron_updates`` (INT64 [N]) and ``energy_pj``
(FP32 [N]); with compare=true also the rate-coded SNN's, the same names prefixed ``rate_``, and the ANN's
``ann_logits``, ``ann_probabilities``, ``ann_macs`` (INT64 [N]) and ``ann_energy_pj``.
"""

from __future__ import annotations

import base64
import math
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import numpy as np
import torch

from converter.snn import BASELINES, ENGINES, ImageResult, InputSpec
from service.binary import unpack_bytes
from service.dataplane import Inference
from service.errors import InvalidRequest, PayloadTooLarge
from service.protocol import (
    OutputDatatype,
    V2InferInput,
    V2InferRequest,
    V2ModelMetadata,
    V2OutputTensor,
    V2Tensor,
)
from service.registry import ServedModel

COUNTS = ("timesteps", "spikes", "synaptic_additions", "memory_accesses", "neuron_updates")
NUMBERS = (int, float)  # JSON numbers; not bool
FORMATS = "JPEG, PNG, WebP, BMP, GIF"


@dataclass(frozen=True)
class Output:
    """An output tensor: the engine it reads (None: the TSC engine asked for), datatype, per-image value."""

    engine: str | None
    datatype: OutputDatatype
    per_class: bool  # [N, classes] rather than [N]
    value: Callable[[ImageResult], Any]


def _outputs(engine: str | None) -> dict[str, Output]:
    spikes = engine is None or ENGINES[engine].spikes
    fields = {
        "logits": Output(engine, "FP32", True, attrgetter("logits")),
        "probabilities": Output(engine, "FP32", True, attrgetter("probabilities")),
    }
    if spikes:
        fields |= {count: Output(engine, "INT64", False, attrgetter(count)) for count in COUNTS}
        fields["energy_pj"] = Output(engine, "FP32", False, attrgetter("energy_pj"))
    else:
        fields["macs"] = Output(engine, "INT64", False, attrgetter("ann_macs"))
        fields["energy_pj"] = Output(engine, "FP32", False, attrgetter("ann_energy_pj"))
    return {f"{engine}_{name}" if engine else name: output for name, output in fields.items()}


OUTPUTS: dict[str, Output] = {
    name: output for engine in (None, *BASELINES) for name, output in _outputs(engine).items()
}


def metadata(served: ServedModel, versions: list[str] | None = None) -> V2ModelMetadata:
    """The model's metadata: the versions served (``versions``, else its own), its two ways to send images
    and every output tensor."""
    net, spec = served.net, served.net.input_spec
    classes = len(net.labels)
    pixels = {"range": [0.0, 1.0], "layout": "NCHW", "mode": "RGB" if spec.channels == 3 else "L"}
    return V2ModelMetadata(
        name=served.name,
        versions=versions or [net.version],
        platform="tsc-snn",
        inputs=[
            V2Tensor(
                name="pixels",
                datatype="FP32",
                shape=[-1, spec.channels, spec.height, spec.width],
                parameters=pixels,
            ),
            V2Tensor(
                name="image",
                datatype="BYTES",
                shape=[-1],
                parameters={"encoding": "base64 in JSON, raw as binary data", "formats": FORMATS},
            ),
        ],
        outputs=[
            V2Tensor(
                name=name,
                datatype=output.datatype,
                shape=[-1, classes] if output.per_class else [-1],
                parameters=None if output.engine is None else {"compare": True},
            )
            for name, output in OUTPUTS.items()
        ],
    )


def pixels(
    tensor: V2InferInput, binary: bytes | None, spec: InputSpec, max_images: int
) -> list[torch.Tensor]:
    """The ``pixels`` input (from ``binary`` when it came as binary data) as images [C, H, W]."""
    _check_datatype(tensor, "FP32")
    expected = [spec.channels, spec.height, spec.width]
    if len(tensor.shape) != 4 or tensor.shape[1:] != expected or tensor.shape[0] < 1:
        raise InvalidRequest(
            f"input 'pixels' has shape {tensor.shape}; this model takes [N, {', '.join(map(str, expected))}]"
            ", N >= 1"
        )
    _check_count(tensor, max_images)
    if binary is not None:
        return _binary_pixels(tensor.shape, binary)
    values = _elements(tensor)
    # JSON may carry NaN, Infinity and integers of any size: none of them is in [0, 1]
    bad = next((i for i, v in enumerate(values) if type(v) not in NUMBERS or not 0 <= v <= 1), None)
    if bad is not None:
        raise _out_of_range(bad, values[bad])
    return list(torch.tensor(values, dtype=torch.float32).view(tensor.shape).unbind())


def encoded_images(tensor: V2InferInput, binary: bytes | None, max_images: int) -> list[bytes]:
    """The ``image`` input's encoded images: base64 strings, or ``binary`` when it came as binary data."""
    _check_datatype(tensor, "BYTES")
    if len(tensor.shape) != 1 or tensor.shape[0] < 1:
        raise InvalidRequest(f"input 'image' has shape {tensor.shape}; send [N], N >= 1 encoded images")
    _check_count(tensor, max_images)
    if binary is not None:
        return unpack_bytes(binary, tensor.shape[0], tensor.name)
    return [_base64(value, i) for i, value in enumerate(_elements(tensor))]


def requested_outputs(request: V2InferRequest, compare: bool) -> dict[str, bool]:
    """The outputs to return (those asked for, in order, else every one the run makes, with the baselines'
    when it ``compare``s), each binary or not."""
    default = request.parameters.binary_data_output
    made = [name for name, output in OUTPUTS.items() if compare or output.engine is None]
    if request.outputs is None:
        return dict.fromkeys(made, default)
    asked: dict[str, bool] = {}
    for output in request.outputs:
        binary = None if output.parameters is None else output.parameters.binary_data
        asked.setdefault(output.name, default if binary is None else binary)
    for name in asked:
        if name not in OUTPUTS:
            raise InvalidRequest(f"unknown output {name!r}; the outputs are {', '.join(OUTPUTS)}")
        if name not in made:
            raise InvalidRequest(f"output {name!r} needs parameters.compare=true")
    return asked


def output_tensors(inference: Inference, names: list[str]) -> list[V2OutputTensor]:
    """The named output tensors of ``inference``, one row per image."""
    tensors = []
    for name in names:
        output = OUTPUTS[name]
        rows = [output.value(o.result) for o in inference.outcomes[output.engine or inference.engine]]
        data = [v for row in rows for v in row] if output.per_class else rows
        shape = [len(rows), len(rows[0])] if output.per_class else [len(rows)]
        tensors.append(V2OutputTensor(name=name, datatype=output.datatype, shape=shape, data=data))
    return tensors


def _check_datatype(tensor: V2InferInput, datatype: str) -> None:
    if tensor.datatype != datatype:
        raise InvalidRequest(f"input {tensor.name!r} must be {datatype}, not {tensor.datatype}")


def _check_count(tensor: V2InferInput, max_images: int) -> None:
    if tensor.shape[0] > max_images:
        raise PayloadTooLarge(
            f"input {tensor.name!r} holds {tensor.shape[0]} images; at most {max_images} per request"
        )


def _elements(tensor: V2InferInput) -> list[Any]:
    """The JSON data, flat; its length must match the shape."""
    values: list[Any] = []
    stack = [iter(tensor.data or ())]
    while stack:  # iterative: nesting as deep as the JSON parser allows cannot overflow the stack here
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            values.append(item)
        else:
            stack.pop()
    if len(values) != math.prod(tensor.shape):
        raise InvalidRequest(
            f"input {tensor.name!r}: shape {tensor.shape} needs {math.prod(tensor.shape)} elements, "
            f"data has {len(values)}"
        )
    return values


def _binary_pixels(shape: list[int], binary: bytes) -> list[torch.Tensor]:
    """FP32 pixels from binary data: 4 little-endian bytes an element, each in [0, 1]."""
    if len(binary) != 4 * math.prod(shape):
        raise InvalidRequest(
            f"input 'pixels': shape {shape} in FP32 needs {4 * math.prod(shape)} bytes of binary data, "
            f"binary_data_size is {len(binary)}"
        )
    pixels = torch.from_numpy(np.frombuffer(binary, dtype="<f4").astype(np.float32))
    outside = torch.nonzero(~((pixels >= 0) & (pixels <= 1)))  # NaN too
    if len(outside):
        first = int(outside[0])
        raise _out_of_range(first, pixels[first].item())
    return list(pixels.view(shape).unbind())


def _out_of_range(index: int, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"input 'pixels' element {index} is {reprlib.repr(value)}; pixels must be numbers in [0, 1]"
    )


def _base64(value: Any, i: int) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequest(f"image[{i}] is {reprlib.repr(value)}; BYTES elements must be base64 strings")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:  # binascii.Error, or a character outside ASCII
        raise InvalidRequest(f"image[{i}] is not valid base64: {exc}") from exc
