"""OpenAPI documentation of the error responses routes share."""

from __future__ import annotations

from typing import Any

from service.protocol import V2Error
from service.schemas import ErrorResponse

DESCRIPTIONS = {
    400: "The upload is not a decodable image.",
    401: "TSC_API_KEY is set and the request lacks it or has a wrong one.",
    404: "No loaded model has that name.",
    413: "The request body, the file count or the image's pixel count is over its limit.",
    415: "The upload is not JPEG, PNG, WebP, BMP or GIF.",
    422: "A parameter is missing or invalid.",
    503: "Models are not loaded yet, the server is shutting down, or the model's queue is full.",
}
PROTOCOL_DESCRIPTIONS = DESCRIPTIONS | {
    400: "The body (or its JSON header) is not valid JSON, an input, parameter or output is invalid, or the "
    "binary data does not add up to what the JSON states; the message names the problem.",
    404: "No loaded model has that name or version.",
    413: "The request body, its image count or an image's pixel count is over its limit.",
    415: "The body is neither application/json nor binary data (application/octet-stream and "
    "Inference-Header-Content-Length).",
}


def errors(*statuses: int, protocol: bool = False) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry documenting these error statuses (of a /v2 route with ``protocol``).

    A /v2 route also documents the 4XX range, which keeps FastAPI from documenting a 422 it never sends.
    """
    model, descriptions = (V2Error, PROTOCOL_DESCRIPTIONS) if protocol else (ErrorResponse, DESCRIPTIONS)
    documented: dict[int | str, dict[str, Any]] = {
        status: {"model": model, "description": descriptions[status]} for status in statuses
    }
    if protocol:
        documented["4XX"] = {"model": V2Error, "description": 'Every client error is {"error": message}.'}
    return documented
