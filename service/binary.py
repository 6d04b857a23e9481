"""The Open Inference Protocol's binary tensor data extension (Triton's, which KServe's clients speak too).

A request may carry its input tensors as raw bytes after its JSON: the ``Inference-Header-Content-Length``
header gives the JSON's length in bytes, and a binary input states its size in ``parameters.binary_data_size``
in place of ``data``; the inputs' bytes follow the JSON in the order the inputs are listed. FP32 elements are
four little-endian bytes each; a BYTES element is its length (four little-endian bytes) and then its bytes.
A response holds an output as binary data when the output's ``parameters.binary_data`` is true, or, where
the output does not say, when the request's ``parameters.binary_data_output`` is (with no ``outputs``
listed, every output follows that): the output's JSON then has ``parameters.binary_data_size`` in place of
``data``, the response's ``Inference-Header-Content-Length`` gives the JSON's length, and the outputs' bytes
follow it in order. FP32 outputs are four little-endian bytes an element, INT64 outputs eight.
"""

from __future__ import annotations

import struct

import numpy as np
from fastapi import Response
from starlette.datastructures import Headers

from service.errors import InvalidRequest
from service.protocol import V2InferRequest, V2InferResponse, V2OutputTensor, V2OutputTensorParameters

HEADER = "Inference-Header-Content-Length"
OUTPUT_TYPES = {"FP32": "<f4", "INT64": "<i8"}
PREFIX = struct.Struct("<I")  # a BYTES element's length


def header_length(headers: Headers) -> int | None:
    """The JSON's length the request's header declares (None: no header), checked before the body is read."""
    value = headers.get(HEADER)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) == 0:
        raise InvalidRequest(
            f"{HEADER} must be the JSON's length in bytes, a whole number above 0, not {value!r}"
        )
    length, declared = int(value), headers.get("content-length", "")
    if declared.isdigit() and length > int(declared):
        raise InvalidRequest(f"{HEADER} {length} is beyond the body's {declared} bytes (Content-Length)")
    return length


def split(body: bytes, length: int) -> tuple[bytes, bytes]:
    """The body's JSON (its first ``length`` bytes) and the binary data after it."""
    if length > len(body):
        raise InvalidRequest(f"{HEADER} {length} is beyond the body's {len(body)} bytes")
    return body[:length], body[length:]


def input_data(request: V2InferRequest, binary: bytes | None) -> list[bytes | None]:
    """Each input's binary data, None where its data is in the JSON; ``binary`` is what follows the JSON
    (None: the request has no ``Inference-Header-Content-Length``)."""
    sizes = []
    for tensor in request.inputs:
        parameters, name = tensor.parameters, tensor.name
        size = None if parameters is None else parameters.binary_data_size
        if parameters is not None and parameters.shared_memory_region is not None:
            raise InvalidRequest(
                f"input {name!r} names a shared memory region: the shared memory extension is not supported; "
                "send its data in the JSON or as binary data"
            )
        if size is not None and tensor.data is not None:
            raise InvalidRequest(f"input {name!r} has both data and parameters.binary_data_size; send one")
        if size is None and tensor.data is None:
            raise InvalidRequest(
                f"input {name!r} has no data: send data, or parameters.binary_data_size and that many bytes "
                f"after the JSON with {HEADER}"
            )
        if size is not None and binary is None:
            raise InvalidRequest(
                f"input {name!r} has parameters.binary_data_size {size} but the request has no {HEADER} "
                "header saying where its JSON ends"
            )
        sizes.append(size)
    total = sum(size for size in sizes if size is not None)
    if binary is not None and total != len(binary):
        raise InvalidRequest(
            f"the inputs' binary_data_size add up to {total} bytes, but {len(binary)} bytes follow the JSON "
            f"({HEADER})"
        )
    data: list[bytes | None] = []
    start = 0
    for size in sizes:
        data.append(None if size is None else (binary or b"")[start : start + size])
        start += size or 0
    return data


def unpack_bytes(data: bytes, count: int, name: str) -> list[bytes]:
    """The ``count`` elements of the BYTES input ``name`` in binary form, each after its 4-byte length."""
    elements, start = [], 0
    for i in range(count):
        if start + PREFIX.size > len(data):
            raise InvalidRequest(
                f"input {name!r}'s binary data ends after {i} of its {count} elements (a BYTES element is "
                "its length in 4 little-endian bytes, then its bytes)"
            )
        (size,) = PREFIX.unpack_from(data, start)
        start += PREFIX.size
        if start + size > len(data):
            raise InvalidRequest(
                f"input {name!r} element {i} says {size} bytes, but {len(data) - start} are left in its "
                "binary data"
            )
        elements.append(data[start : start + size])
        start += size
    if start != len(data):
        raise InvalidRequest(
            f"input {name!r}'s binary data has {len(data) - start} bytes after its {count} elements"
        )
    return elements


def pack(outputs: list[V2OutputTensor], binary: list[bool]) -> tuple[list[V2OutputTensor], bytes]:
    """The outputs with those marked in ``binary`` in binary form, and their bytes, in order."""
    packed, data = [], []
    for output, raw in zip(outputs, binary, strict=True):
        if not raw:
            packed.append(output)
            continue
        values = np.asarray(output.data, dtype=OUTPUT_TYPES[output.datatype]).tobytes()
        size = V2OutputTensorParameters(binary_data_size=len(values))
        packed.append(output.model_copy(update={"data": None, "parameters": size}))
        data.append(values)
    return packed, b"".join(data)


def binary_response(response: V2InferResponse, data: bytes) -> Response:
    """The response's JSON and then ``data``, its header giving the JSON's length."""
    header = response.model_dump_json(exclude_none=True).encode()
    return Response(header + data, media_type="application/octet-stream", headers={HEADER: str(len(header))})
