"""Prometheus metrics of one app instance, in a registry of its own (with the process and Python collectors).

No ``_created`` series: ``disable_created_metrics`` holds for the whole process once this module is imported.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from converter.snn import ImageResult, SpikingNetwork

disable_created_metrics()

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
R10 = (100, 125, 160, 200, 250, 315, 400, 500, 630, 800)  # Renard's R10 preferred numbers, x100


def decades(first: int, last: int) -> tuple[float, ...]:
    """Bucket bounds from 10**first to 10**last, ten a decade (R10: 1, 1.25, 1.6, 2, ... 8, holding 1-2-5)."""
    return (*(m * 10**e / 100 for e in range(first, last) for m in R10), float(10**last))


SPIKES = decades(1, 9)  # the tiny test models: 1e4; ResNet-20 on CIFAR-10: 2e5; rate-coded and larger: more
ADDITIONS = decades(2, 11)  # ResNet-20 on CIFAR-10: 3e7 an image; a VGG-16 on ImageNet: about 1e10
PICOJOULE = 1e-12
# in joules, Prometheus's base unit: 0.9 pJ an addition (converter.snn.energy), the additions' range in pJ
ENERGY_J = tuple(bound * PICOJOULE for bound in ADDITIONS)


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
        self.request_duration = self._histogram(
            "tsc_http_request_duration_seconds",
            "Time from request start to response end.",
            ("method", "route"),
            SECONDS,
        )
        self.in_flight = Gauge("tsc_http_requests_in_flight", "HTTP requests being handled.", registry=r)
        self.queue_duration = self._histogram(
            "tsc_queue_duration_seconds", "Time an image waits for its batch.", ("model",), SECONDS
        )
        self.inference_duration = self._histogram(
            "tsc_inference_duration_seconds", "Engine time of one batch.", ("model", "engine"), SECONDS
        )
        self.batch_size = self._histogram(
            "tsc_batch_size", "Images per engine batch.", ("model", "engine"), BATCH_SIZES
        )
        self.queue_depth = Gauge(
            "tsc_queue_depth", "Images waiting for a batch, per lane.", ["model", "lane"], registry=r
        )
        self.spikes = self._per_image("tsc_spikes_per_image", "Spikes one inference emitted.", SPIKES)
        self.synaptic_additions = self._per_image(
            "tsc_synaptic_additions_per_image", "Synaptic additions of one inference.", ADDITIONS
        )
        self.energy = self._per_image(
            "tsc_energy_per_image_joules",
            "Energy estimate of one inference (ImageResult.energy_pj).",
            ENERGY_J,
        )
        self.models_loaded = Gauge("tsc_models_loaded", "Models loaded and warmed up.", registry=r)
        self.model_load_failures = Counter(
            "tsc_model_load_failures", "Checkpoints (or the model directory) that failed to load.", registry=r
        )
        self.model_info = Info(
            "tsc_model",
            "A loaded model: network name, version, T, windows in layer order, latency steps, precision.",
            ["model"],
            registry=r,
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)  # registers itself on CPython only

    def _histogram(
        self, name: str, documentation: str, labels: tuple[str, ...], buckets: tuple[float, ...]
    ) -> Histogram:
        """A histogram in this registry."""
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)

    def _per_image(self, name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
        """A cost histogram by model and engine, in this registry."""
        return self._histogram(name, documentation, ("model", "engine"), buckets)

    def observe_batch(self, model: str, engine: str, seconds: float, waits: list[float]) -> None:
        """Record one engine batch: its engine time, its size, and how long each of its images queued."""
        self.inference_duration.labels(model, engine).observe(seconds)
        self.batch_size.labels(model, engine).observe(len(waits))
        for waited in waits:
            self.queue_duration.labels(model).observe(waited)

    def observe_queue_depth(self, model: str, lane: str, waiting: int) -> None:
        """Publish how many images wait in one model's lane."""
        self.queue_depth.labels(model, lane).set(waiting)

    def observe_costs(self, model: str, engine: str, result: ImageResult) -> None:
        """Record one image's spikes, synaptic additions and energy estimate."""
        self.spikes.labels(model, engine).observe(result.spikes)
        self.synaptic_additions.labels(model, engine).observe(result.synaptic_additions)
        self.energy.labels(model, engine).observe(result.energy_pj * PICOJOULE)

    def model_loaded(self, model: str, net: SpikingNetwork, loaded: int) -> None:
        """Publish a loaded model's info series (windows: T if uniform, else every layer's) and the count."""
        self.model_info.labels(model).info(
            {
                "name": net.name,
                "version": net.version,
                "T": str(net.T),
                "windows": str(net.T) if net.uniform else ",".join(map(str, net.windows.values())),
                "timesteps": str(net.timesteps),
                "precision": str(net.dtype).removeprefix("torch."),
            }
        )
        self.models_loaded.set(loaded)

    def model_unloaded(self, model: str, loaded: int) -> None:
        """Drop an unloaded model's info series and publish the count."""
        self.model_info.remove(model)
        self.models_loaded.set(loaded)

    def render(self) -> bytes:
        """The current values in the Prometheus text exposition format."""
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/models/{name}``), never the raw path; ``unmatched`` if none."""
    return getattr(scope.get("route"), "path", "unmatched")


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
            route = route_template(scope)
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.request_duration.labels(method, route).observe(time.perf_counter() - started)
