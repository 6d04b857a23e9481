"""Open Inference Protocol gRPC messages, and their conversion to and from the REST v2 models.

The messages come from ``service/proto/open_inference_grpc.proto`` (KServe's Open Inference Protocol, the
``inference.GRPCInferenceService`` that Triton's and KServe's gRPC clients call), compiled by ``make proto``
into ``open_inference_grpc.binpb``, a descriptor set. Their classes are built from it as protoc's Python
output builds them, but in a descriptor pool of the service's own: a client library in the same process
(tritonclient, kserve) registers the same ``inference.*`` names in protobuf's default pool, and one name can
be defined there only once.

An inference request becomes a ``V2InferRequest`` and each input's data in binary form (as the REST binary
tensor data extension has it: FP32 as 4 little-endian bytes an element, a BYTES element as its length in 4
little-endian bytes and then its bytes), whether it came in ``raw_input_contents`` or in ``contents``, so
that ``service.tensors`` reads both protocols' tensors alike.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from pydantic import BaseModel, ValidationError

from service.binary import PREFIX, pack
from service.errors import InvalidRequest
from service.protocol import V2InferRequest, V2ModelMetadata, V2OutputTensor

PROTO = "open_inference_grpc.proto"
DESCRIPTORS = "open_inference_grpc.binpb"  # protoc --descriptor_set_out of PROTO (make proto)
SERVICE_NAME = "inference.GRPCInferenceService"
PARAMETER_KINDS = ("bool_param", "int64_param", "string_param", "double_param", "uint64_param")


def _pool() -> descriptor_pool.DescriptorPool:
    """A descriptor pool holding the compiled proto, and nothing else."""
    compiled = resources.files("service").joinpath("proto", DESCRIPTORS).read_bytes()
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(compiled).file:
        pool.Add(file)
    return pool


POOL = _pool()
CLASSES = message_factory.GetMessageClassesForFiles([PROTO], POOL)
SERVICE = POOL.FindServiceByName(SERVICE_NAME)


def message_class(name: str) -> type[Message]:
    """The class of the proto's message ``name`` (``ModelInferRequest``, ...)."""
    return CLASSES[f"inference.{name}"]


def parameters(values: Any) -> dict[str, Any]:
    """A ``map<string, InferParameter>`` as plain values (an unset parameter is left out)."""
    found = {}
    for key, parameter in values.items():
        kind = parameter.WhichOneof("parameter_choice")
        if kind is not None:
            found[key] = getattr(parameter, kind)
    return found


def infer_request(request: Any) -> tuple[V2InferRequest, list[bytes]]:
    """The request as the REST v2 model (without its model name and version), and each input's data."""
    raw, inputs = list(request.raw_input_contents), request.inputs
    if raw and len(raw) != len(inputs):
        raise InvalidRequest(
            f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs: "
            "send one per input, in order"
        )
    if raw and any(tensor.HasField("contents") for tensor in inputs):
        raise InvalidRequest("send the inputs' data in raw_input_contents or in contents, not both")
    for tensor in inputs:
        if "shared_memory_region" in tensor.parameters:
            raise InvalidRequest(
                f"input {tensor.name!r} names a shared memory region: the shared memory extension is not "
                "supported; send its data in raw_input_contents or contents"
            )
    body = {
        "id": request.id or None,
        "parameters": parameters(request.parameters),
        "inputs": [{"name": t.name, "shape": list(t.shape), "datatype": t.datatype} for t in inputs],
    }
    if request.outputs:
        body["outputs"] = [{"name": o.name, "parameters": parameters(o.parameters)} for o in request.outputs]
    validated = _validated(body)
    data = raw or [_contents(tensor) for tensor in inputs]
    for i, (tensor, values) in enumerate(zip(inputs, data, strict=True)):
        if raw and tensor.datatype == "FP32":
            _check_count(tensor, len(values) / 4, f"raw_input_contents[{i}] holds {len(values)} bytes")
    return validated, data


def _validated(body: dict[str, Any]) -> V2InferRequest:
    """``body`` as a V2InferRequest, or InvalidRequest naming every field that is wrong."""
    try:
        return V2InferRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from None


def _contents(tensor: Any) -> bytes:
    """An input's ``contents`` in binary form; an input of another datatype is refused by service.tensors."""
    if not tensor.HasField("contents"):
        raise InvalidRequest(f"input {tensor.name!r} has no data: send raw_input_contents or contents")
    if tensor.datatype == "FP32":
        floats = tensor.contents.fp32_contents
        _check_count(tensor, len(floats), f"contents.fp32_contents holds {len(floats)}")
        return np.asarray(floats, dtype="<f4").tobytes()
    if tensor.datatype == "BYTES":
        elements = tensor.contents.bytes_contents
        _check_count(tensor, len(elements), f"contents.bytes_contents holds {len(elements)}")
        return b"".join(PREFIX.pack(len(element)) + element for element in elements)
    return b""


def _check_count(tensor: Any, count: float, holds: str) -> None:
    """Refuse data whose element count is not the shape's."""
    needed = math.prod(tensor.shape)
    if count != needed:
        raise InvalidRequest(
            f"input {tensor.name!r}: shape {list(tensor.shape)} needs {needed} {tensor.datatype} elements, "
            f"{holds}"
        )


def infer_response(
    served: tuple[str, str],
    request_id: str,
    options: dict[str, Any],
    outputs: list[V2OutputTensor],
    raw: bool,
) -> Message:
    """A ModelInferResponse of model ``served`` (name, version): the outputs in ``raw_output_contents`` when
    ``raw``, else in each output's ``contents``; ``options`` are the response's parameters."""
    response = message_class("ModelInferResponse")(
        model_name=served[0], model_version=served[1], id=request_id
    )
    for key, value in options.items():
        kind = "bool_param" if isinstance(value, bool) else "string_param"
        response.parameters[key].MergeFrom(message_class("InferParameter")(**{kind: value}))
    for output in outputs:
        tensor = response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        if raw:
            response.raw_output_contents.append(pack([output], [True])[1])
        elif output.datatype == "FP32":
            tensor.contents.fp32_contents.extend(output.data or [])
        else:
            tensor.contents.int64_contents.extend(output.data or [])
    return response


def metadata_response(metadata: V2ModelMetadata) -> Message:
    """A ModelMetadataResponse (the tensors' parameters have no place in it)."""
    tensors = {
        side: [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in getattr(metadata, side)]
        for side in ("inputs", "outputs")
    }
    fields = metadata.model_dump(include={"name", "versions", "platform"})
    return message_class("ModelMetadataResponse")(**fields, **tensors)


def as_message(name: str, model: BaseModel) -> Message:
    """A REST v2 body (``V2Live``, ``V2ServerMetadata``, ...) as the proto's message ``name``."""
    return message_class(name)(**model.model_dump())
