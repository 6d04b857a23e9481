"""The application factory: settings in, a FastAPI app out, models loaded by its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp

from service import __version__
from service.auth import ApiKeyMiddleware, require_api_key
from service.dataplane import DataPlane
from service.errors import install_error_handlers
from service.grpc_server import start_grpc, stop_grpc
from service.limits import RequestLimitsMiddleware
from service.logs import RequestContextMiddleware
from service.metrics import RequestMetricsMiddleware
from service.routers import classify, docs, health, metrics, models, page, repository, v2
from service.settings import Settings

DESCRIPTION = """
Classify images with Temporal-Switch-Coding spiking networks converted from trained CNNs.

Every answer reports what it cost: SNN latency in time steps, spikes in total and per layer, synaptic
additions, memory accesses, neuron updates, the ANN's multiply-accumulates for the same network, and an
energy estimate with its constants named. `compare=true` adds the ANN's and a rate-coded SNN's figures,
`raster=true` the image's spike raster; the page at `/` draws all of it for people.
"""


class App(FastAPI):
    """FastAPI with the request context outermost: even the 500 handler's answer and logs carry the id."""

    def build_middleware_stack(self) -> ASGIApp:
        """Starlette's stack (its server-error middleware first) inside ``RequestContextMiddleware``."""
        return RequestContextMiddleware(super().build_middleware_stack())


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; its lifespan starts the worker threads, loads every checkpoint of TSC_MODEL_DIR and
    serves gRPC on TSC_GRPC_PORT.

    Classify and model routes need TSC_API_KEY when one is set (and only then does OpenAPI declare it);
    health, metrics, the docs and the page stay open for probes, scrapers and people.
    """
    dataplane = DataPlane(settings or Settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await dataplane.start()
        try:
            grpc_server = await start_grpc(dataplane)
            try:
                yield
            finally:
                await stop_grpc(grpc_server)
        finally:
            await dataplane.stop()

    app = App(
        title="tsc-snn",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by service.routers.docs from packaged assets, not a CDN
        redoc_url=None,
    )
    app.state.dataplane = dataplane
    settings = dataplane.settings  # the limits' middleware is inside the metrics': its answers are counted
    app.add_middleware(
        RequestLimitsMiddleware,
        max_bytes=settings.max_upload_bytes,
        timeout_s=settings.body_timeout_s,
        min_rate=settings.body_min_rate,
        budget_bytes=settings.body_budget_bytes,
        client_budget_bytes=settings.client_body_budget,
    )
    if settings.api_key is not None:  # outside the body limits: an anonymous body is never read
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key.get_secret_value())
    app.add_middleware(RequestMetricsMiddleware, metrics=dataplane.metrics)
    install_error_handlers(app)
    protected = [Depends(require_api_key)] if settings.api_key is not None else []
    for router in (classify.router, models.router, v2.router, repository.router):
        app.include_router(router, dependencies=protected)
    for router in (health.router, metrics.router, page.router, docs.router):
        app.include_router(router)
    app.mount(page.ASSETS_URL, page.ASSETS, name="assets")
    app.mount(docs.ASSETS_URL, docs.ASSETS, name="docs-assets")
    return app
