"""GET /metrics in the Prometheus text format; HEAD /metrics its headers alone."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.routers.deps import DataPlaneDep

router = APIRouter(tags=["metrics"])


@router.api_route(
    "/metrics",
    methods=["GET", "HEAD"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(request: Request, dataplane: DataPlaneDep) -> Response:
    """Request counts and durations, queue and inference times, batch sizes, spikes, additions and energy."""
    body = dataplane.metrics.render()
    if request.method == "HEAD":  # the headers GET would send, Content-Length included, and no body
        return Response(headers={"Content-Length": str(len(body))}, media_type=dataplane.metrics.content_type)
    return Response(body, media_type=dataplane.metrics.content_type)
