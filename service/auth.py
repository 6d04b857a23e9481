"""API-key check: with TSC_API_KEY set, classify and model routes need it (bearer token or X-API-Key).

``ApiKeyMiddleware`` checks it from the headers before anything reads the body, so an anonymous client
cannot make the server receive or parse a large upload; the route dependency declares the schemes in
OpenAPI (and checks again).
"""

from __future__ import annotations

import secrets
from types import SimpleNamespace
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette._utils import get_route_path
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Unauthorized, error_response, is_protocol
from service.routers.deps import DataPlaneDep

bearer_scheme = HTTPBearer(auto_error=False, description="TSC_API_KEY sent as 'Authorization: Bearer <key>'.")
header_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="TSC_API_KEY sent as 'X-API-Key'."
)


# the routers that need the key; the rest stays open
PROTECTED = ("/classify", "/models", "/v2/models", "/v2/repository")
REFUSED = SimpleNamespace(path="protected")  # the route label of requests refused before routing
MISSING = "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


def key_problem(given: str | None, expected: str) -> str | None:
    """Why ``given`` is not the key (None when it is); constant-time comparison."""
    if given is None:
        return MISSING
    if not secrets.compare_digest(given.encode(), expected.encode()):
        return "the API key is wrong"
    return None


class ApiKeyMiddleware:
    """401 for a protected path without the key, answered from the headers: the body is never read."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app, self.api_key = app, api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass open paths and keyed requests through; answer the others at once."""
        if scope["type"] != "http" or not get_route_path(scope).startswith(PROTECTED):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        given = (
            credentials.strip() if scheme.lower() == "bearer" and credentials else headers.get("x-api-key")
        )
        problem = key_problem(given, self.api_key)
        if problem is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = REFUSED  # for the metrics and the access log: refused before routing, not a 404
        error = Unauthorized(problem)
        headers_out = {**(error.headers or {}), "Connection": "close"}  # the unread body goes with it
        response = error_response(
            error.status, error.error, problem, headers_out, protocol=is_protocol(scope)
        )
        await response(scope, receive, send)


async def require_api_key(
    dataplane: DataPlaneDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    header: Annotated[str | None, Depends(header_scheme)],
) -> None:
    """Let the request through when it carries TSC_API_KEY; else raise Unauthorized."""
    expected = dataplane.settings.api_key
    assert expected is not None, "installed only when TSC_API_KEY is set"
    problem = key_problem(bearer.credentials if bearer is not None else header, expected.get_secret_value())
    if problem is not None:
        raise Unauthorized(problem)
