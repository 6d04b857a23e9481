"""Request limits inside the app: the body's size and pace, and a JSON answer to requests cut off at shutdown.

The body limit is enforced on the declared Content-Length and again on every chunk as it streams in; a body
that stops arriving (a client that stalls, or a Content-Length larger than what it sends) gets a 408 after
TSC_BODY_TIMEOUT_S and the connection is closed (uvicorn would wait for the rest). When the shutdown
grace period ends, uvicorn cancels the requests still running; each gets a 503 ``not_ready`` here instead
of uvicorn's plain-text 500 and a traceback in the log.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import NotReady, error_response, is_protocol

log = logging.getLogger(__name__)
CLOSE = {"Connection": "close"}
SHUTTING_DOWN = NotReady("the server is shutting down; retry on another instance or once it is back")


class RequestLimitsMiddleware:
    """413 once a body is known to exceed ``max_bytes``, 408 once it stalls, 503 when cut off at shutdown."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a too-large Content-Length at once; else serve, counting and timing the body as it comes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"the request body is over the limit of {self.max_bytes} bytes (TSC_MAX_UPLOAD_BYTES)"
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = error_response(413, "payload_too_large", detail, protocol=is_protocol(scope))
            await response(scope, receive, send)
            return
        received, complete, started = 0, False, False

        async def counted() -> Message:
            nonlocal received, complete
            if complete:  # after the body only http.disconnect comes, whenever the client goes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except asyncio.TimeoutError:
                stalled = f"no more of the request body came for {self.timeout_s:g} s (TSC_BODY_TIMEOUT_S)"
                raise HTTPException(408, stalled, CLOSE) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, detail)  # reaches the JSON handler, whoever reads the body
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except asyncio.CancelledError:
            await self._cut_off(scope, receive, send, started)

    @staticmethod
    async def _cut_off(scope: Scope, receive: Receive, send: Send, started: bool) -> None:
        """Answer a request cancelled at shutdown with 503 (unless its answer began), without a traceback."""
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # the request is answered here; nothing else in its task is left to stop
        log.warning("%s %s cut off: the shutdown grace period ended", scope["method"], scope["path"])
        if started:  # too late for another answer: the server closes the connection
            return
        gone = SHUTTING_DOWN
        headers = (gone.headers or {}) | CLOSE
        response = error_response(gone.status, gone.error, gone.detail, headers, protocol=is_protocol(scope))
        await response(scope, receive, send)
