"""Open Inference Protocol (KServe / Triton v2) model routes: metadata, readiness, inference; versioned too.

Inference takes JSON, or JSON and then binary tensor data (``Inference-Header-Content-Length``, see
``service.binary``): the route splits such a body and hands FastAPI the JSON alone. Errors are the protocol's
``{"error": message}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.types import Message

from service.binary import HEADER, binary_response, header_length, input_data, pack, split
from service.dataplane import DataPlane, Inference
from service.errors import InvalidRequest, UnsupportedMediaType
from service.protocol import (
    V2InferRequest,
    V2InferResponse,
    V2InferResponseParameters,
    V2ModelMetadata,
    V2ModelReady,
)
from service.registry import ServedModel
from service.routers.deps import DataPlaneDep, client_id, while_connected
from service.routers.models import ModelName
from service.routers.responses import errors
from service.tensors import encoded_images, metadata, output_tensors, pixels, requested_outputs

Version = Annotated[str, Path(description="The model's version, as its metadata lists it.")]
MODEL_ERRORS = errors(400, 401, 404, 503, protocol=True)
INFER_ERRORS = errors(400, 401, 404, 413, 415, 503, protocol=True)
BINARY_DATA = "binary_data"  # the request.state attribute holding the bytes after a binary request's JSON
BINARY_SIZE = "Its value is the JSON's length in bytes; binary data follows the JSON."
INFER_OPENAPI = {
    "parameters": [
        {
            "name": HEADER,
            "in": "header",
            "required": False,
            "schema": {"type": "integer", "minimum": 1},
            "description": f"The binary tensor data extension: {BINARY_SIZE}",
        }
    ],
    "requestBody": {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    },
}
INFER_RESPONSES = INFER_ERRORS | {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            HEADER: {"schema": {"type": "integer"}, "description": f"With binary outputs: {BINARY_SIZE}"}
        },
    }
}
INFER_DESCRIPTION = """
Send one input: `pixels` (FP32 [N, C, H, W] in [0, 1]) or `image` (BYTES [N], each a JPEG, PNG, WebP,
BMP or GIF: base64 strings in JSON). Parameters: `engine`, `compare`; others are ignored.

**Binary tensor data** (Triton's extension, which KServe's clients speak): send the JSON, then the input's
raw bytes, with the header `Inference-Header-Content-Length` giving the JSON's length and the input's
`parameters.binary_data_size` giving its bytes' count, in place of `data`. FP32 is 4 little-endian bytes an
element; a BYTES element is its length as 4 little-endian bytes and then its bytes (an image file as it
is). Outputs come as binary data when their `parameters.binary_data` is true, or, where unset, when the
request's `parameters.binary_data_output` is: the response is then `application/octet-stream`, its
`Inference-Header-Content-Length` the JSON's length, each binary output's `parameters.binary_data_size` its
bytes' count (FP32 4 bytes an element, INT64 8), its data after the JSON in the order of the outputs.
"""


class ProtocolRoute(APIRoute):
    """A route that checks the media type and splits binary tensor data off before FastAPI parses the JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, behind the checks."""
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if request.method != "POST":
                return await handler(request)
            length = header_length(request.headers)
            media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
            binary_media = length is not None and media == "application/octet-stream"
            if media != "application/json" and not media.endswith("+json") and not binary_media:
                raise UnsupportedMediaType(
                    f"{media} is not supported; send application/json, or application/octet-stream with "
                    f"{HEADER} (binary tensor data)"
                )
            if length is None:
                return await handler(request)
            header, data = split(await request.body(), length)
            inner = _json_request(request, header)
            setattr(inner.state, BINARY_DATA, data)
            try:
                return await handler(inner)
            except RequestValidationError as exc:
                invalid = [e for e in exc.errors() if e["type"] == "json_invalid"]
                if invalid:
                    raise InvalidRequest(
                        f"the body's first {length} bytes ({HEADER}) are not valid JSON: "
                        f"{invalid[0]['ctx']['error']}"
                    ) from None
                raise

        return checked


def _json_request(request: Request, header: bytes) -> Request:
    """``request`` as if its body were ``header``, a JSON document; later reads wait for the disconnect."""
    kept = [(k, v) for k, v in request.scope["headers"] if k not in (b"content-type", b"content-length")]
    json = [(b"content-type", b"application/json"), (b"content-length", str(len(header)).encode())]
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await request.receive()
        sent = True
        return {"type": "http.request", "body": header, "more_body": False}

    return Request({**request.scope, "headers": kept + json}, receive)


# protocol clients (tritonclient among them) send JSON without a Content-Type
router = APIRouter(tags=["open inference protocol"], route_class=ProtocolRoute, strict_content_type=False)


@router.get("/v2/models/{name}", responses=MODEL_ERRORS, response_model_exclude_none=True)
async def model_metadata(dataplane: DataPlaneDep, name: ModelName) -> V2ModelMetadata:
    """Model metadata: the inputs (pixels or encoded images, send one) and every output tensor."""
    served = dataplane.model(name)
    return metadata(served, dataplane.versions(served.name))


@router.get("/v2/models/{name}/versions/{version}", responses=MODEL_ERRORS, response_model_exclude_none=True)
async def version_metadata(dataplane: DataPlaneDep, name: ModelName, version: Version) -> V2ModelMetadata:
    """Model metadata, when ``version`` is the loaded model's version (404 otherwise)."""
    return metadata(dataplane.model(name, version))


@router.get("/v2/models/{name}/ready", responses=MODEL_ERRORS)
async def model_ready(dataplane: DataPlaneDep, name: ModelName) -> V2ModelReady:
    """Model readiness: 200 once the model is loaded and warmed up."""
    dataplane.model(name)
    return V2ModelReady(name=name, ready=True)


@router.get("/v2/models/{name}/versions/{version}/ready", responses=MODEL_ERRORS)
async def version_ready(dataplane: DataPlaneDep, name: ModelName, version: Version) -> V2ModelReady:
    """Model readiness, when ``version`` is the loaded model's version (404 otherwise)."""
    dataplane.model(name, version)
    return V2ModelReady(name=name, ready=True)


@router.post(
    "/v2/models/{name}/infer",
    responses=INFER_RESPONSES,
    response_model=V2InferResponse,
    response_model_exclude_none=True,
    description=INFER_DESCRIPTION,
    openapi_extra=INFER_OPENAPI,
)
async def infer(
    request: Request, dataplane: DataPlaneDep, name: ModelName, body: V2InferRequest
) -> V2InferResponse | Response:
    """Classify pixels or encoded images: logits, probabilities and what the spiking run cost, per image."""
    return await _infer(request, dataplane, dataplane.model(name), body)


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    responses=INFER_RESPONSES,
    response_model=V2InferResponse,
    response_model_exclude_none=True,
    description="Inference, when `version` is the loaded model's version (404 otherwise).\n"
    + INFER_DESCRIPTION,
    openapi_extra=INFER_OPENAPI,
)
async def infer_version(
    request: Request, dataplane: DataPlaneDep, name: ModelName, version: Version, body: V2InferRequest
) -> V2InferResponse | Response:
    """Inference of one version of the model."""
    return await _infer(request, dataplane, dataplane.model(name, version), body)


async def _infer(
    request: Request, dataplane: DataPlane, served: ServedModel, body: V2InferRequest
) -> V2InferResponse | Response:
    for field, value, url in (
        ("model_name", body.model_name, served.name),
        ("model_version", body.model_version, served.net.version),
    ):
        if value is not None and value != url:
            raise InvalidRequest(f"the body's {field} {value!r} is not the URL's {url!r}")
    options = body.parameters
    compare = bool(served.settings.compare) if options.compare is None else options.compare
    outputs = requested_outputs(body, compare)
    (binary,) = input_data(body, getattr(request.state, BINARY_DATA, None))
    tensor, spec, most = body.inputs[0], served.net.input_spec, dataplane.settings.max_batch_files

    async def answer() -> Inference:
        if tensor.name == "pixels":
            images = pixels(tensor, binary, spec, most)
        else:
            encoded = encoded_images(tensor, binary, most)
            decoding = (dataplane.decode(data, None, spec, f"image[{i}]") for i, data in enumerate(encoded))
            images = list(await asyncio.gather(*decoding))
        return await dataplane.infer(served, images, options.engine, compare, client=client_id(request))

    inference = await while_connected(request, answer())
    tensors, data = pack(output_tensors(inference, list(outputs)), list(outputs.values()))
    response = V2InferResponse(
        model_name=served.name,
        model_version=served.net.version,
        id=body.id,
        parameters=V2InferResponseParameters(engine=options.engine, compare=compare),
        outputs=tensors,
    )
    return binary_response(response, data) if any(outputs.values()) else response
