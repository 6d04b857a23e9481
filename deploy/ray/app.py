"""The service as a Ray Serve application: every replica runs the FastAPI app of ``service.app.create_app``.

    serve run deploy/ray/serve_config.yaml        # replicas, autoscaling and settings from the config
    serve run deploy.ray.app:app                  # the defaults below, settings from the TSC_* environment

Serve's ingress runs the app's lifespan in each replica, so each one starts its own worker threads and
loads every checkpoint of TSC_MODEL_DIR; a replica takes requests only once its models are loaded. Each
answer names the replica that served it in ``X-Serve-Replica``. Serve's HTTP proxy accepts the connections,
not the service's own uvicorn: its limits (TSC_HOST, TSC_PORT, header sizes, timeouts, connection
limit) do not apply; the config's ``http_options`` and ``max_ongoing_requests`` take their place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from ray import serve
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.app import create_app
from service.settings import Settings

REPLICA_HEADER = "X-Serve-Replica"


class ReplicaHeader:
    """ASGI middleware that adds ``X-Serve-Replica: <replica id>`` to every HTTP response."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        """Wrap ``app``; ``replica`` is the header's value."""
        self.app, self.header = app, (REPLICA_HEADER.lower().encode(), replica.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the header to the response's start message."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: Message) -> None:
            """Send ``message``, with the header added when it starts the response."""
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_named)


def wait_for_models(app: FastAPI) -> None:
    """Make ``app``'s lifespan start-up return only once its data plane has finished loading the models."""
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        """The app's own lifespan, whose start-up also waits for the models."""
        async with started(app) as state:
            await app.state.dataplane.wait_loaded()
            yield state

    app.router.lifespan_context = lifespan


# max_ongoing_requests bounds what the proxy sends one replica: high enough for the service's own batcher
# to fill batches (TSC_MAX_BATCH_SIZE, 32 by default), low enough for Serve to spread load over replicas.
@serve.deployment(name="tsc-snn", num_replicas=1, max_ongoing_requests=32, ray_actor_options={"num_cpus": 1})
@serve.ingress()
class Classifier:
    """One Serve replica of the service: its own app, engine workers and loaded models."""

    def __init__(self, settings: Settings | None = None) -> None:
        """Keep ``settings`` (by default, ``Settings()`` from the replica's TSC_* environment)."""
        self.settings = settings or Settings()

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The service's app for this replica (Serve runs its lifespan next), naming the replica."""
        app = create_app(self.settings.model_copy(update={"grpc_port": 0}))  # replicas would share its port
        wait_for_models(app)
        app.add_middleware(ReplicaHeader, replica=serve.get_replica_context().replica_id.unique_id)
        return app


app = Classifier.bind()
