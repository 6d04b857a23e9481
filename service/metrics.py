"""Prometheus metrics of one app instance, in a registry of its own."""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from converter.results import ImageResult

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
COUNTS = tuple(float(10**e) for e in range(2, 12))


class Metrics:
    """Request, queue, batch and spiking-cost series; ``render`` gives the Prometheus text format."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tsc_http_requests",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "tsc_http_request_duration_seconds",
            "Time from request start to response end.",
            ["method", "route"],
            buckets=SECONDS,
            registry=r,
        )
        self.in_flight = Gauge("tsc_http_requests_in_flight", "HTTP requests being handled.", registry=r)
        self.queue_duration = Histogram(
            "tsc_queue_duration_seconds",
            "Time an image waits for its batch.",
            ["model"],
            buckets=SECONDS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "tsc_inference_duration_seconds",
            "Engine time of one batch.",
            ["model", "engine"],
            buckets=SECONDS,
            registry=r,
        )
        self.batch_size = Histogram(
            "tsc_batch_size", "Images per engine batch.", ["model", "engine"], buckets=BATCH_SIZES, registry=r
        )
        self.queue_depth = Gauge(
            "tsc_queue_depth", "Images waiting for a batch, per lane.", ["model", "lane"], registry=r
        )
        self.spikes = Histogram(
            "tsc_spikes_per_image",
            "Spikes one inference emitted.",
            ["model", "engine"],
            buckets=COUNTS,
            registry=r,
        )
        self.synaptic_additions = Histogram(
            "tsc_synaptic_additions_per_image",
            "Synaptic additions of one inference.",
            ["model", "engine"],
            buckets=COUNTS,
            registry=r,
        )
        self.models_loaded = Gauge("tsc_models_loaded", "Models loaded and warmed up.", registry=r)

    def observe_costs(self, model: str, engine: str, result: ImageResult) -> None:
        """Record one image's spikes and synaptic additions."""
        self.spikes.labels(model, engine).observe(result.spikes)
        self.synaptic_additions.labels(model, engine).observe(result.synaptic_additions)

    def render(self) -> bytes:
        """The current values in the Prometheus text exposition format."""
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Counts requests by route template (never the raw path) and status, and times them."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, then record it; the start time is left in ``request.state.started``."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope.setdefault("state", {})["started"] = started
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.request_duration.labels(method, route).observe(time.perf_counter() - started)
