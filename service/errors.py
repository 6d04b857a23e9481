"""Error types of the service and the handlers that turn every failure into ``{"error", "detail"}`` JSON."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """A failure with an HTTP status, a stable machine-readable code and a human-readable detail."""

    status = 500
    error = "internal_error"
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidImage(ServiceError):
    """The upload is not a decodable image."""

    status, error = 400, "invalid_image"


class Unauthorized(ServiceError):
    """The API key is missing or wrong."""

    status, error = 401, "unauthorized"
    headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": "Bearer"}


class ModelNotFound(ServiceError):
    """No loaded model has that name."""

    status, error = 404, "model_not_found"


class PayloadTooLarge(ServiceError):
    """The upload, its file count or its decoded pixel count is over a limit."""

    status, error = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    """The upload is a file type the service does not decode."""

    status, error = 415, "unsupported_media_type"


class NotReady(ServiceError):
    """Models are still loading, none could be loaded, or the server is shutting down."""

    status, error = 503, "not_ready"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "5"}


class QueueFull(ServiceError):
    """The model's inference queue has no room for the request's images."""

    status, error = 503, "queue_full"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "1"}


def error_response(
    status: int, error: str, detail: object, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON body every error of the service has."""
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _code(status: int) -> str:
    return "payload_too_large" if status == 413 else HTTPStatus(status).phrase.lower().replace(" ", "_")


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(exc.status, exc.error, exc.detail, exc.headers)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, _code(exc.status_code), exc.detail, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return error_response(422, "invalid_parameters", jsonable_encoder(fields))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return error_response(500, "internal_error", "the server failed on this request; the failure is logged")


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception type to its JSON handler, so no stack trace ever reaches a client."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
