"""Connection guards uvicorn's HTTP/1.1 protocol lacks, and its own error answers in the service's JSON.

Uvicorn (0.54, with httptools) limits neither the size nor the number of request headers, gives a
connection unlimited time to send them, and answers parser errors and its concurrency limit in plain text.
``GuardedHttpToolsProtocol`` adds, on each connection:

- 431 beyond TSC_MAX_HEADER_BYTES (request line and headers) or TSC_MAX_HEADERS, checked as the bytes
  arrive, so that a huge header is never piled up;
- 408 when a request's line and headers take longer than TSC_HEADER_TIMEOUT_S (a connection that sent
  nothing at all is closed without an answer);
- 503 ``overloaded`` beyond TSC_MAX_CLIENT_CONNECTIONS from one address (a quarter of the limit by default);
- 503 ``overloaded`` beyond TSC_LIMIT_CONCURRENCY (uvicorn's ``limit_concurrency``): a connection over the
  limit is answered and closed as it arrives, so stalled clients cannot take every file descriptor, and a
  request is refused while that many are being handled;
- 400 in JSON for a request the parser rejects (malformed request line or header).

Every refusal closes the connection (after reading and dropping what the client still sends for up to
LINGER_S, so that it gets to read the answer) and is logged, at most one line a second per kind.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from typing import Any, ClassVar

from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from service.errors import error_response, is_protocol, is_protocol_path
from service.settings import Settings

log = logging.getLogger(__name__)
CLOSE = {"Connection": "close"}
OVERLOADED = (
    "the server is handling as many connections and requests as it may (TSC_LIMIT_CONCURRENCY); retry"
)
MALFORMED = "the request is not valid HTTP/1.1: its request line or a header is malformed"
LINGER_S = 2.0


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the answer is in ``GuardedHttpToolsProtocol._refusal``."""


class _Throttled:
    """Warnings of one kind at most once every ``interval`` seconds, with the count of those held back."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.last: dict[str, float] = {}
        self.held: Counter[str] = Counter()

    def warning(self, kind: str, message: str) -> None:
        """Log ``message`` unless a ``kind`` line was logged less than ``interval`` ago."""
        now = time.monotonic()
        if now - self.last.get(kind, -math.inf) < self.interval:
            self.held[kind] += 1
            return
        self.last[kind] = now
        held = self.held.pop(kind, 0)
        log.warning("%s%s", message, f" (and {held} more since the last such line)" if held else "")


refusals = _Throttled()


async def overloaded(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI answer to a request over the concurrency limit: 503 ``overloaded``, connection closed."""
    headers = CLOSE | {"Retry-After": "1"}
    response = error_response(503, "overloaded", OVERLOADED, headers, protocol=is_protocol(scope))
    await response(scope, receive, send)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol with header limits, a header timeout and a connection cap."""

    settings: ClassVar[Settings]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_concurrency, self.limit_concurrency = self.limit_concurrency, None  # enforced here, in JSON
        self._in_head = True  # reading a request line and headers
        self._head_bytes = 0  # bytes received while reading them (coarse: whole chunks)
        self._head_size = 0  # their size as parsed
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str, str] | None = None
        self._discarding = False  # answered and closing: what still arrives is dropped

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Refuse the connection when the limit is reached; else start the clock for its first request."""
        super().connection_made(transport)
        if self.max_concurrency is not None and len(self.connections) > self.max_concurrency:
            why = f"over {self.max_concurrency} open connections"
            self._answer(503, "overloaded", OVERLOADED, why, linger=False)  # its descriptor is freed at once
            return
        cap, address = self.settings.client_connection_cap, self.client[0] if self.client else None
        if cap is not None and sum(1 for c in self.connections if c.client and c.client[0] == address) > cap:
            detail = f"this address holds the connections one client may ({cap}, TSC_MAX_CLIENT_CONNECTIONS)"
            self._answer(503, "overloaded", detail, f"over {cap} connections from {address}", linger=False)
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock, then let uvicorn clean up."""
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; refuse once more than TSC_MAX_HEADER_BYTES arrived without the headers' end."""
        if self._discarding:
            return
        super().data_received(data)
        if self._in_head and not self._discarding and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.settings.max_header_bytes:
                self._answer(431, "request_header_fields_too_large", self._too_large(), "headers too large")

    def on_message_begin(self) -> None:
        """A request starts: its headers are counted and timed afresh."""
        super().on_message_begin()
        self._in_head, self._head_bytes, self._head_size, self._header_count = True, 0, 0, 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        """Count the request target into the head's size."""
        super().on_url(url)
        self._grow(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count the header; refuse the request beyond TSC_MAX_HEADERS."""
        super().on_header(name, value)
        self._header_count += 1
        if self._header_count > self.settings.max_headers:
            detail = f"more than {self.settings.max_headers} request headers (TSC_MAX_HEADERS)"
            self._refuse(431, "request_header_fields_too_large", detail, "too many headers")
        self._grow(len(name) + len(value) + 4)

    def on_headers_complete(self) -> None:
        """Stop the clock; hand the request to the app, or to ``overloaded`` when at the limit."""
        self._in_head = False
        self._disarm()
        if self.max_concurrency is None or len(self.tasks) < self.max_concurrency:
            super().on_headers_complete()
            return
        refusals.warning("concurrency", f"503 overloaded: {self.max_concurrency} requests are being handled")
        app, self.app = self.app, overloaded
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def send_400_response(self, msg: str) -> None:
        """Answer a parser error, or the refusal a callback stopped the parser for, in JSON."""
        status, code, detail = self._refusal or (400, "bad_request", MALFORMED)
        self._refusal = None
        self._answer(status, code, detail, None)  # uvicorn has logged it, the callback that refused too

    def _grow(self, size: int) -> None:
        """Add ``size`` parsed bytes to the head; refuse it beyond TSC_MAX_HEADER_BYTES."""
        self._head_size += size
        if self._head_size > self.settings.max_header_bytes:
            self._refuse(431, "request_header_fields_too_large", self._too_large(), "headers too large")

    def _too_large(self) -> str:
        """The 431 detail for a head over TSC_MAX_HEADER_BYTES."""
        limit = self.settings.max_header_bytes
        return f"the request line and headers are over the limit of {limit} bytes (TSC_MAX_HEADER_BYTES)"

    def _refuse(self, status: int, code: str, detail: str, why: str) -> None:
        """Stop the parser from a callback: the answer goes out through ``send_400_response``."""
        refusals.warning(why, f"{status} {code}: {why} from {self._peer()}")
        self._refusal = (status, code, detail)
        raise _Refused(detail)

    def _answer(self, status: int, code: str, detail: str, why: str | None, linger: bool = True) -> None:
        """Write a JSON error (the /v2 shape for a /v2 target) and close the connection.

        With ``linger``, the write side is closed at once and the rest of the request read and dropped for
        up to LINGER_S: closing a socket with unread data resets it, and the client would lose the answer.
        """
        if why is not None:
            refusals.warning(why, f"{status} {code}: {why} from {self._peer()}")
        target = getattr(self, "url", b"").decode("latin-1")
        response = error_response(status, code, detail, CLOSE, protocol=is_protocol_path(target))
        headers = [*self.server_state.default_headers, *response.raw_headers]
        head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(STATUS_LINE[status] + head + b"\r\n" + response.body)
        self._disarm()
        answering = self.cycle is not None and not self.cycle.response_complete  # a pipelined earlier request
        if linger and not answering and self.transport.can_write_eof():
            self._discarding = True
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()

    def _arm(self) -> None:
        """Start the head's clock, unless it runs already."""
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.settings.header_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        """Stop the head's clock."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        """Answer 408 to a request whose head is late; close a connection that sent nothing."""
        self._head_timer = None
        if self.transport.is_closing():
            return
        seconds = self.settings.header_timeout_s
        if self._head_bytes == 0:
            refusals.warning(
                "idle", f"closed a connection from {self._peer()} that sent nothing in {seconds:g} s"
            )
            self.transport.close()
            return
        detail = f"the request line and headers did not arrive within {seconds:g} s (TSC_HEADER_TIMEOUT_S)"
        self._answer(408, "request_timeout", detail, "request headers too slow")

    def _peer(self) -> str:
        """The client's address, for the log."""
        return f"{self.client[0]}:{self.client[1]}" if self.client else "an unknown client"


def http_protocol(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to give uvicorn (``http=``) for these settings."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"settings": settings})
