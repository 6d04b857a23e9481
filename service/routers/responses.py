"""OpenAPI documentation of the error responses routes share."""

from __future__ import annotations

from typing import Any

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


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry documenting these error statuses with the ErrorResponse body."""
    return {status: {"model": ErrorResponse, "description": DESCRIPTIONS[status]} for status in statuses}
