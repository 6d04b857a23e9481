"""GET /metrics in the Prometheus text format; HEAD /metrics its headers alone."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.routers.deps import DataPlaneDep

router = APIRouter(tags=["metrics"])


TEXT = {200: {"content": {"text/plain": {}}}}


@router.get("/metrics", response_class=Response, responses=TEXT)
async def metrics(dataplane: DataPlaneDep) -> Response:
    """Request counts and durations, queue and inference times, batch sizes, spikes, additions and energy."""
    return Response(dataplane.metrics.render(), media_type=dataplane.metrics.content_type)


@router.head("/metrics", response_class=Response, responses=TEXT)
async def metrics_head(dataplane: DataPlaneDep) -> Response:
    """The headers GET /metrics would send, Content-Length included, and no body."""
    length = str(len(dataplane.metrics.render()))
    return Response(headers={"Content-Length": length}, media_type=dataplane.metrics.content_type)
