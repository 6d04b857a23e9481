"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.runtime import RuntimeDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(runtime: RuntimeDep) -> Response:
    """Request counts and durations, queue and inference times, batch sizes, spikes and synaptic additions."""
    return Response(runtime.metrics.render(), media_type=runtime.metrics.content_type)
