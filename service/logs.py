"""Request ids and logging: the id of the request being handled, on every log record; access lines.

``RequestContextMiddleware`` takes the client's ``X-Request-ID`` (1 to 128 of ``ID_CHARACTERS``) or
makes one (uuid4 hex), echoes it on the response, holds it in a contextvar while the request is handled and
writes one access line per request on the ``service.access`` logger. ``RequestIdFilter`` copies the id onto
log records; ``log_config`` is the ``logging.config.dictConfig`` of the service: text or JSON lines.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import route_template

HEADER = "X-Request-ID"
# what ids are made of (uuids, W3C and AWS trace ids, base64): no space or bracket that could end the
# text log's ``[id]:`` and forge the rest of a line
ID_CHARACTERS = "A-Za-z0-9._~:;/+=@-"
VALID_ID = re.compile(f"[{ID_CHARACTERS}]{{1,128}}")
NO_REQUEST = "-"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
ACCESS_FIELDS = ("method", "route", "status", "duration_ms", "client")
ACCESS_FORMAT = "%(method)s %(route)s %(status)d %(duration_ms).1f ms %(client)s"

LogFormat = Literal["text", "json"]

request_id: ContextVar[str] = ContextVar("request_id", default=NO_REQUEST)
access_log = logging.getLogger("service.access")


def accept_request_id(given: str | None) -> str:
    """The client's id when it is 1 to 128 of ``ID_CHARACTERS``, else a new uuid4 hex."""
    if given is not None and VALID_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (the request being handled, ``-`` outside one) to records that lack it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Stamp the record; never drops one."""
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC), level, logger, message, request id, access fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", request_id.get()),
        }
        entry |= {name: getattr(record, name) for name in ACCESS_FIELDS if hasattr(record, name)}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_config(level: str, fmt: LogFormat) -> dict[str, Any]:
    """A dictConfig: every logger (uvicorn's too) to stderr via the root, each record with a request id."""
    formatter: dict[str, Any] = {"()": JsonFormatter} if fmt == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"service": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "service",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error")},
    }


class RequestContextMiddleware:
    """Gives each HTTP request an id (echoed as X-Request-ID, on its log records) and an access line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request with its id set; log method, route template, status, duration and client."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = accept_request_id(Headers(scope=scope).get(HEADER))
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            client = scope.get("client")
            fields = {
                "method": scope["method"],
                "route": route_template(scope),
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                "client": f"{client[0]}:{client[1]}" if client else NO_REQUEST,
            }
            access_log.info(ACCESS_FORMAT, fields, extra=fields)
            request_id.reset(token)
