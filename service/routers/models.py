"""GET /models, /models/{name} and the Open Inference Protocol's model metadata and readiness."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from service.registry import MODEL_NAME_PATTERN
from service.reports import model_detail, model_summary
from service.routers.responses import errors
from service.runtime import RuntimeDep
from service.schemas import ModelDetail, ModelList, V2ModelMetadata, V2ModelReady, V2Tensor

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
    )


@router.get("/models/{name}", responses=errors(401, 404, 422, 503))
async def get_model(runtime: RuntimeDep, name: ModelName) -> ModelDetail:
    """One model: labels, T, input spec and its manifest (accuracy table, provenance, calibration)."""
    return model_detail(runtime.store.get(name), runtime.store.default_name)


@router.get("/v2/models/{name}", responses=errors(401, 404, 422, 503))
async def v2_model_metadata(runtime: RuntimeDep, name: ModelName) -> V2ModelMetadata:
    """Open Inference Protocol model metadata: the input pixels and the output logits as tensors."""
    net = runtime.store.get(name).net
    spec = net.input_spec
    return V2ModelMetadata(
        name=name,
        versions=[net.version],
        platform="tsc-snn",
        inputs=[V2Tensor(name="pixels", datatype="FP32", shape=[-1, spec.channels, spec.height, spec.width])],
        outputs=[V2Tensor(name="logits", datatype="FP32", shape=[-1, len(net.labels)])],
    )


@router.get("/v2/models/{name}/ready", responses=errors(401, 404, 422, 503))
async def v2_model_ready(runtime: RuntimeDep, name: ModelName) -> V2ModelReady:
    """Open Inference Protocol model readiness: 200 once the model is loaded and warmed up."""
    runtime.store.get(name)
    return V2ModelReady(name=name, ready=True)
