"""Error types of the service and the handlers that turn every failure into ``{"error", "detail"}`` JSON.

Open Inference Protocol routes (/v2...) answer in that protocol's shape instead, ``{"error": message}``, and
their request validation failures are its 400 rather than 422.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount
from starlette.types import Scope

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


class InvalidRequest(ServiceError):
    """A request is malformed: an Open Inference Protocol input, parameter or output, or a repeated part."""

    status, error = 400, "invalid_request"


class Unauthorized(ServiceError):
    """The API key is missing or wrong."""

    status, error = 401, "unauthorized"
    headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": "Bearer"}


class EngineNotAllowed(InvalidRequest):
    """The model's settings do not allow the engine asked for."""

    status, error = 400, "engine_not_allowed"


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


class Overloaded(ServiceError):
    """The server holds as many request bodies as its memory budget allows (TSC_BODY_BUDGET_BYTES)."""

    status, error = 503, "overloaded"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "1", "Connection": "close"}


class EngineFailed(ServiceError):
    """The engine process running the request's batch died (it is started again)."""

    status, error = 503, "engine_failed"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "5"}


class ClientDisconnected(ServiceError):
    """The client closed the connection before its answer was ready; the answer reaches nobody."""

    status, error = 499, "client_closed_request"


def is_protocol(scope: Scope) -> bool:
    """Whether the request is for an Open Inference Protocol route (/v2...), whose errors have its shape."""
    return is_protocol_path(scope["path"].removeprefix(scope.get("root_path", "")))


def is_protocol_path(path: str) -> bool:
    """Whether ``path`` (without the root path) is an Open Inference Protocol route's."""
    return path == "/v2" or path.startswith(("/v2/", "/v2?"))


def error_response(
    status: int, error: str, detail: object, headers: dict[str, str] | None = None, *, protocol: bool = False
) -> JSONResponse:
    """The JSON body every error has: ``{"error": code, "detail": ...}``, or ``{"error": detail}`` on /v2."""
    content = {"error": detail} if protocol else {"error": error, "detail": detail}
    return JSONResponse(content, status_code=status, headers=headers)


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")  # what a 405's Allow can name


def _code(status: int) -> str:
    return "payload_too_large" if status == 413 else HTTPStatus(status).phrase.lower().replace(" ", "_")


def _message(error: dict[str, Any]) -> str:
    if error["type"] == "json_invalid":
        return f"the body is not valid JSON: {error['ctx']['error']}"
    return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    protocol = is_protocol(request.scope)
    return error_response(exc.status, exc.error, exc.detail, exc.headers, protocol=protocol)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status, protocol = exc.status_code, is_protocol(request.scope)
    headers = exc.headers
    if status == 405:  # Starlette names the first route of the path; a path may have one per method
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
    return error_response(status, _code(status), exc.detail, headers, protocol=protocol)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on the request's path (mounted apps answer for
    themselves)."""
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    return [
        method
        for method in METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with one entry per bad field; on /v2 the protocol's 400 with one message naming them all."""
    assert isinstance(exc, RequestValidationError)
    if is_protocol(request.scope):
        detail = "; ".join(_message(e) for e in exc.errors())
        return error_response(400, InvalidRequest.error, detail, protocol=True)
    fields = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return error_response(422, "invalid_parameters", jsonable_encoder(fields))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
    detail = "the server failed on this request; the failure is logged"
    return error_response(500, "internal_error", detail, protocol=is_protocol(request.scope))


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception type to its JSON handler, so no stack trace ever reaches a client."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
