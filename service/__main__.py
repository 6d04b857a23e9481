"""``python -m service``: the command the container runs (uvicorn serving the app with TSC_* settings)."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from service.app import create_app
from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    """Parse --host/--port (defaults TSC_HOST/TSC_PORT), then serve until SIGINT or SIGTERM."""
    settings = Settings()
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument(
        "--host", default=settings.host, help="interface to bind (TSC_HOST, default %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=settings.port, help="port to bind (TSC_PORT, default %(default)s)"
    )
    args = parser.parse_args(argv)
    settings = Settings(host=args.host, port=args.port)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        server_header=False,
    )


if __name__ == "__main__":
    main()
