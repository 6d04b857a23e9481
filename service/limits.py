"""Request body limit, enforced on the declared Content-Length and again on every chunk as it streams in."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response, is_protocol


class BodyLimitMiddleware:
    """Answers 413 ``payload_too_large`` as soon as a request body is known to exceed ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a too-large Content-Length at once; otherwise count the body while the app reads it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"the request body is over the limit of {self.max_bytes} bytes (TSC_MAX_UPLOAD_BYTES)"
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = error_response(413, "payload_too_large", detail, protocol=is_protocol(scope))
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, detail)  # reaches the JSON handler whoever is reading the body
            return message

        await self.app(scope, counted, send)
