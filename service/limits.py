"""Request limits inside the app: the body's size and pace, the bytes all bodies hold together, and a JSON
answer to requests cut off at shutdown.

The body limit is enforced on the declared Content-Length and again on every chunk as it streams in; a body
that stops arriving (a client that stalls, or a Content-Length larger than what it sends) gets a 408 after
TSC_BODY_TIMEOUT_S and the connection is closed (uvicorn would wait for the rest). A body must also arrive
whole within TSC_BODY_TIMEOUT_S + size / TSC_BODY_MIN_RATE (its Content-Length, else the upload limit), so a
client sending a byte now and then cannot keep a slot. All requests together hold at most
TSC_BODY_BUDGET_BYTES of body, and the requests of one client address at most its share of that (the share
of the connections TSC_MAX_CLIENT_CONNECTIONS gives it, or one largest body if that is more), so that one
client stalling bodies cannot take the whole budget: a request's declared length is reserved before any of
it is read (a chunked body's bytes as they come), and one that does not fit gets 503 ``overloaded`` with
Connection: close.
When the shutdown grace period ends, uvicorn cancels the requests still running; each gets a 503
``not_ready`` here instead of uvicorn's plain-text 500 and a traceback in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import NotReady, Overloaded, error_response, is_protocol

log = logging.getLogger(__name__)
CLOSE = {"Connection": "close"}
SHUTTING_DOWN = NotReady("the server is shutting down; retry on another instance or once it is back")


class BodyBudget:
    """Bytes of request bodies held by every request together and by each client address (one event loop:
    no lock needed); ``per_client`` None: no limit per address."""

    def __init__(self, limit: int, per_client: int | None = None) -> None:
        self.limit, self.per_client, self.held = limit, per_client, 0
        self.held_by: Counter[str] = Counter()

    def take(self, n: int, client: str = "") -> bool:
        """Reserve ``n`` bytes for ``client``; False (nothing reserved) when they do not fit."""
        if self.held + n > self.limit or not self._fits_client(n, client):
            return False
        self.held += n
        self.held_by[client] += n
        return True

    def give(self, n: int, client: str = "") -> None:
        """Release ``n`` bytes reserved for ``client``."""
        self.held -= n
        self.held_by[client] -= n
        if self.held_by[client] <= 0:
            del self.held_by[client]

    def _fits_client(self, n: int, client: str) -> bool:
        return self.per_client is None or self.held_by[client] + n <= self.per_client

    def refusal(self, n: int, client: str) -> str:
        """Why ``n`` more bytes for ``client`` do not fit."""
        if not self._fits_client(n, client):
            return (
                f"this address holds as many request bodies as one client may ({self.per_client} bytes, its "
                "TSC_MAX_CLIENT_CONNECTIONS share of TSC_BODY_BUDGET_BYTES); retry once they are done"
            )
        return (
            f"the server holds as many request bodies as it may ({self.limit} bytes together, "
            "TSC_BODY_BUDGET_BYTES); retry shortly"
        )


class RequestLimitsMiddleware:
    """413 once a body is known to exceed ``max_bytes``, 408 once it stalls or lags, 503 when the bodies held
    would exceed the budget or when cut off at shutdown."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout_s: float = 30.0,
        min_rate: float = 16 * 1024,
        budget_bytes: int | None = None,
        client_budget_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.min_rate = min_rate
        limit = budget_bytes if budget_bytes is not None else 64 * max_bytes
        self.budget = BodyBudget(limit, client_budget_bytes)

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
        reserved = int(declared) if declared.isdigit() else 0
        client = scope["client"][0] if scope.get("client") else ""
        if not self.budget.take(reserved, client):
            busy = Overloaded(self.budget.refusal(reserved, client))
            response = error_response(
                busy.status, busy.error, busy.detail, busy.headers, protocol=is_protocol(scope)
            )
            await response(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s + (reserved or self.max_bytes) / self.min_rate
        received, complete, started = 0, False, False

        async def counted() -> Message:
            nonlocal received, complete, reserved
            if complete:  # after the body only http.disconnect comes, whenever the client goes
                return await receive()
            wait = min(self.timeout_s, deadline - loop.time())
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.0))
            except asyncio.TimeoutError:
                stalled = (
                    f"no more of the request body came for {self.timeout_s:g} s (TSC_BODY_TIMEOUT_S)"
                    if wait == self.timeout_s
                    else f"the request body came slower than {self.min_rate:g} bytes/s on average after "
                    f"{self.timeout_s:g} s (TSC_BODY_MIN_RATE, TSC_BODY_TIMEOUT_S)"
                )
                raise HTTPException(408, stalled, CLOSE) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, detail)  # reaches the JSON handler, whoever reads the body
            if received > reserved:  # a chunked body (or one longer than declared): reserve as it comes
                if not self.budget.take(received - reserved, client):
                    raise Overloaded(self.budget.refusal(received - reserved, client))
                reserved = received
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except asyncio.CancelledError:
            await self._cut_off(scope, receive, send, started)
        finally:
            self.budget.give(reserved, client)

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
