"""GET /models and /models/{name}: the loaded models and their manifests."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from service.registry import MODEL_NAME_PATTERN
from service.reports import model_detail, model_summary
from service.routers.deps import DataPlaneDep
from service.routers.responses import errors
from service.schemas import ModelDetail, ModelList

router = APIRouter(tags=["models"])
ModelName = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, description="A name from GET /models.")]


@router.get("/models", responses=errors(401))
async def list_models(dataplane: DataPlaneDep) -> ModelList:
    """Every loaded model, the default one, and the checkpoints that failed to load."""
    served = dataplane.catalogue()
    return ModelList(
        default_model=served.default,
        models=[model_summary(model, served.default) for model in served.models.values()],
        failed=served.failures,
        not_ready=served.not_ready,
    )


@router.get("/models/{name}", responses=errors(401, 404, 422, 503))
async def get_model(dataplane: DataPlaneDep, name: ModelName) -> ModelDetail:
    """One model: labels, T, input spec and its manifest (accuracy table, provenance, calibration)."""
    served = dataplane.model(name)
    return model_detail(served, dataplane.catalogue().default, dataplane.versions(served.name))
