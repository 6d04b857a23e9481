"""API-key check: with TSC_API_KEY set, classify and model routes need it (bearer token or X-API-Key)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.errors import Unauthorized
from service.routers.deps import DataPlaneDep

bearer_scheme = HTTPBearer(auto_error=False, description="TSC_API_KEY sent as 'Authorization: Bearer <key>'.")
header_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="TSC_API_KEY sent as 'X-API-Key'."
)


async def require_api_key(
    dataplane: DataPlaneDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    header: Annotated[str | None, Depends(header_scheme)],
) -> None:
    """Let the request through when it carries TSC_API_KEY; else raise Unauthorized."""
    expected = dataplane.settings.api_key
    assert expected is not None, "installed only when TSC_API_KEY is set"
    given = bearer.credentials if bearer is not None else header
    if given is None:
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise Unauthorized("the API key is wrong")
