"""GET /models and /models/{name}: the loaded models and their manifests."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from service.registry import MODEL_NAME_PATTERN
from service.reports import model_detail, model_summary
from service.routers.responses import errors
from service.runtime import RuntimeDep
from service.schemas import ModelDetail, ModelList

router = APIRouter(tags=["models"])
ModelName = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, description="A name from GET /models.")]


@router.get("/models", responses=errors(401))
async def list_models(runtime: RuntimeDep) -> ModelList:
    """Every loaded model, the default one, and the checkpoints that failed to load."""
    store = runtime.store
    return ModelList(
        default_model=store.default_name,
        models=[model_summary(served, store.default_name) for served in store.models.values()],
        failed=store.failures,
        not_ready=store.not_ready_reason(),
    )


@router.get("/models/{name}", responses=errors(401, 404, 422, 503))
async def get_model(runtime: RuntimeDep, name: ModelName) -> ModelDetail:
    """One model: labels, T, input spec and its manifest (accuracy table, provenance, calibration)."""
    return model_detail(runtime.store.get(name), runtime.store.default_name)
