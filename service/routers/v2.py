"""Open Inference Protocol (KServe / Triton v2) model routes: metadata, readiness, inference; versioned too.

Requests and responses are JSON only: the binary tensor data extension (``Inference-Header-Content-Length``)
is refused with a 400 naming it, before the body is read. Errors are the protocol's ``{"error": message}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.routing import APIRoute

from service.dataplane import DataPlane, Inference
from service.errors import InvalidRequest, UnsupportedMediaType
from service.protocol import (
    BINARY,
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


class ProtocolRoute(APIRoute):
    """A route that refuses binary tensor data and non-JSON bodies before FastAPI parses the body as JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, behind the checks."""
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if "inference-header-content-length" in request.headers:
                raise InvalidRequest(f"{BINARY}: send JSON only, without Inference-Header-Content-Length")
            media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
            if request.method == "POST" and media != "application/json" and not media.endswith("+json"):
                raise UnsupportedMediaType(f"{media} is not supported; send application/json")
            return await handler(request)

        return checked


# protocol clients (tritonclient among them) send JSON without a Content-Type
router = APIRouter(tags=["open inference protocol"], route_class=ProtocolRoute, strict_content_type=False)


@router.get("/v2/models/{name}", responses=MODEL_ERRORS, response_model_exclude_none=True)
async def model_metadata(dataplane: DataPlaneDep, name: ModelName) -> V2ModelMetadata:
    """Model metadata: the inputs (pixels or encoded images, send one) and every output tensor."""
    return metadata(dataplane.model(name))


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


@router.post("/v2/models/{name}/infer", responses=INFER_ERRORS, response_model_exclude_none=True)
async def infer(
    request: Request, dataplane: DataPlaneDep, name: ModelName, body: V2InferRequest
) -> V2InferResponse:
    """Classify pixels or encoded images: logits, probabilities and what the spiking run cost, per image."""
    return await _infer(request, dataplane, dataplane.model(name), body)


@router.post(
    "/v2/models/{name}/versions/{version}/infer", responses=INFER_ERRORS, response_model_exclude_none=True
)
async def infer_version(
    request: Request, dataplane: DataPlaneDep, name: ModelName, version: Version, body: V2InferRequest
) -> V2InferResponse:
    """Inference, when ``version`` is the loaded model's version (404 otherwise)."""
    return await _infer(request, dataplane, dataplane.model(name, version), body)


async def _infer(
    request: Request, dataplane: DataPlane, served: ServedModel, body: V2InferRequest
) -> V2InferResponse:
    for field, value, url in (
        ("model_name", body.model_name, served.name),
        ("model_version", body.model_version, served.net.version),
    ):
        if value is not None and value != url:
            raise InvalidRequest(f"the body's {field} {value!r} is not the URL's {url!r}")
    names = requested_outputs(body)
    tensor, spec, most = body.inputs[0], served.net.input_spec, dataplane.settings.max_batch_files
    options = body.parameters

    async def answer() -> Inference:
        if tensor.name == "pixels":
            images = pixels(tensor, spec, most)
        else:
            encoded = encoded_images(tensor, most)
            decoding = (dataplane.decode(data, None, spec, f"image[{i}]") for i, data in enumerate(encoded))
            images = list(await asyncio.gather(*decoding))
        engine, compare = options.engine, options.compare
        return await dataplane.infer(served, images, engine, compare, client=client_id(request))

    inference = await while_connected(request, answer())
    return V2InferResponse(
        model_name=served.name,
        model_version=served.net.version,
        id=body.id,
        parameters=V2InferResponseParameters(engine=options.engine, compare=options.compare),
        outputs=output_tensors(inference, names),
    )
