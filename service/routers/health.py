"""Liveness and readiness: Kubernetes style (/livez, /readyz) and Open Inference Protocol (/v2/...)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.dataplane import DataPlane
from service.protocol import EXTENSIONS, V2Live, V2Ready, V2ServerMetadata
from service.routers.deps import DataPlaneDep
from service.routers.responses import errors
from service.schemas import Liveness, Readiness

router = APIRouter(tags=["health"])


def _ready(dataplane: DataPlane) -> Readiness:
    default = dataplane.ready()  # NotReady: the public reason (the full one: the log and GET /models)
    return Readiness(default_model=default.name, models=list(dataplane.catalogue().models))


@router.get("/livez")
async def livez() -> Liveness:
    """200 while the process serves HTTP."""
    return Liveness()


@router.head("/livez", response_class=Response)
async def livez_head() -> Response:
    """200 while the process serves HTTP, headers only (probes that send HEAD)."""
    return Response()


@router.head("/readyz", response_class=Response, responses=errors(503))
async def readyz_head(dataplane: DataPlaneDep) -> Response:
    """GET /readyz's status, headers only."""
    _ready(dataplane)
    return Response()


@router.get("/readyz", responses=errors(503))
async def readyz(dataplane: DataPlaneDep) -> Readiness:
    """200 once every model is loaded and warmed up; 503 with a generic reason before that and at shutdown."""
    return _ready(dataplane)


@router.get("/v2")
async def v2_server_metadata(request: Request) -> V2ServerMetadata:
    """Open Inference Protocol server metadata, with the protocol extensions it supports."""
    return V2ServerMetadata(name=request.app.title, version=request.app.version, extensions=EXTENSIONS)


@router.get("/v2/health/live")
async def v2_live() -> V2Live:
    """Open Inference Protocol liveness."""
    return V2Live(live=True)


@router.get("/v2/health/ready", responses=errors(503, protocol=True))
async def v2_ready(dataplane: DataPlaneDep) -> V2Ready:
    """Open Inference Protocol readiness (503 with the reason when not ready)."""
    _ready(dataplane)
    return V2Ready(ready=True)
