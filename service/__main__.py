"""``python -m service``: the command the container runs (uvicorn serving the app with TSC_* settings)."""

from __future__ import annotations

import argparse
import logging.config
import os
import threading

import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.connections import http_protocol
from service.logs import log_config
from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    """Parse --host/--port (defaults TSC_HOST/TSC_PORT), then serve until SIGINT or SIGTERM."""
    settings = _settings()
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument(
        "--host", default=settings.host, help="interface to bind (TSC_HOST, default %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=settings.port, help="port to bind (TSC_PORT, default %(default)s)"
    )
    args = parser.parse_args(argv)
    settings = _settings(host=args.host, port=args.port)
    logging.config.dictConfig(log_config(settings.log_level, settings.log_format))
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # configured above: request ids, text or JSON
        access_log=False,  # service.logs writes the access lines, with route templates and request ids
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        server_header=False,
        http=http_protocol(settings),  # header size, count and time limits; JSON errors
        limit_concurrency=settings.limit_concurrency,
        backlog=settings.backlog,
        timeout_keep_alive=settings.keep_alive_timeout_s,
    )
    _exit_past_running_batches()


def _exit_past_running_batches(wait_s: float = 1.0) -> None:
    """Exit now if an inference thread still runs a batch nobody waits for (torch cannot be interrupted, and
    the interpreter would join it): the process then ends within the grace period plus a few seconds."""
    busy = [t for t in threading.enumerate() if t.name.startswith("tsc-") and t.is_alive()]
    for t in busy:
        t.join(wait_s / max(1, len(busy)))
    if any(t.is_alive() for t in busy):
        logging.getLogger("service").warning("exiting without waiting for a running batch")
        logging.shutdown()
        os._exit(0)


def _settings(**given: object) -> Settings:
    """The TSC_* settings (``given`` winning), or exit naming what is wrong, without echoing any value."""
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'TSC_' + '_'.join(map(str, e['loc'])).upper() if e['loc'] else 'settings'}: {e['msg']}"
            for e in exc.errors()
        )
        raise SystemExit(f"invalid configuration: {problems}") from None


if __name__ == "__main__":
    main()
