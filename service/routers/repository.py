"""The model repository extension of the Open Inference Protocol (Triton's and KServe's REST spelling).

POST /v2/repository/index                    every model of the model directory and its state
POST /v2/repository/models/{name}/load       load it, or load it again (every version), while serving
POST /v2/repository/models/{name}/unload     stop serving it once its queued images are answered
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from service.routers.deps import DataPlaneDep
from service.routers.models import ModelName
from service.routers.responses import errors

router = APIRouter(tags=["repository"])


class IndexRequest(BaseModel):
    """What to list (other keys are ignored)."""

    model_config = ConfigDict(extra="ignore")

    ready: bool = Field(False, strict=True, description="true: only the versions being served.")


class IndexEntry(BaseModel):
    """One model version of the model directory."""

    name: str
    version: str | None = Field(None, description="Set for a version being served.")
    state: Literal["READY", "UNAVAILABLE"]
    reason: str | None = Field(None, description="Why it is not served: not loaded, or its load failure.")


class LoadResponse(BaseModel):
    """The model is loaded and serves requests."""

    name: str
    load: Literal[True] = True


class UnloadResponse(BaseModel):
    """The model is no longer served."""

    name: str
    unload: Literal[True] = True


@router.post(
    "/v2/repository/index",
    responses=errors(400, 401, protocol=True),
    response_model_exclude_none=True,
)
async def repository_index(dataplane: DataPlaneDep, body: IndexRequest | None = None) -> list[IndexEntry]:
    """Every model of the model directory and every one served: one entry per version served, and one
    saying why for a model that is not served."""
    entries = [IndexEntry.model_validate(e, from_attributes=True) for e in dataplane.repository()]
    return [e for e in entries if e.state == "READY"] if body is not None and body.ready else entries


@router.post("/v2/repository/models/{name}/load", responses=errors(400, 401, 404, 503, protocol=True))
async def load_model(dataplane: DataPlaneDep, name: ModelName) -> LoadResponse:
    """Load the model's checkpoints (every version) from the model directory, or load them again; other
    models are served meanwhile, and a load that fails (400, with the reason) leaves the old versions."""
    await dataplane.load(name)
    return LoadResponse(name=name)


@router.post("/v2/repository/models/{name}/unload", responses=errors(400, 401, 404, 503, protocol=True))
async def unload_model(dataplane: DataPlaneDep, name: ModelName) -> UnloadResponse:
    """Stop serving the model (every version) once the images it has queued are answered."""
    await dataplane.unload(name)
    return UnloadResponse(name=name)
