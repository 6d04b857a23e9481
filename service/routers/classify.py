"""POST /classify and /classify/batch: decode, batch, run, and report the spiking cost of each answer."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, UploadFile

from service.dataplane import DataPlane, Inference
from service.errors import InvalidRequest, PayloadTooLarge
from service.reports import classification
from service.routers.deps import DataPlaneDep, client_id, decode_upload, safe_filename, while_connected
from service.routers.responses import errors
from service.schemas import BatchClassification, BatchForm, Classification, ClassifyForm, ClassifyOptions

router = APIRouter(tags=["classify"])
ERRORS = errors(400, 401, 404, 413, 415, 422, 503)
QueryOptions = Annotated[ClassifyOptions, Query()]


def _options(query: ClassifyOptions, form: ClassifyOptions) -> ClassifyOptions:
    """Options from the query string and the form, the form's winning where both give one."""
    fields = set(ClassifyOptions.model_fields)
    given = query.model_dump(exclude_unset=True) | form.model_dump(include=fields, exclude_unset=True)
    return ClassifyOptions.model_validate(given)


@router.post("/classify", responses=ERRORS)
async def classify(
    request: Request,
    dataplane: DataPlaneDep,
    query: QueryOptions,
    form: Annotated[ClassifyForm, Form(media_type="multipart/form-data")],
) -> Classification:
    """Classify one image; the answer carries its latency, spikes, operations and energy estimate."""
    sent = len((await request.form()).getlist("file"))  # the parsed form, kept by the request
    if sent > 1:
        raise InvalidRequest(f"{sent} 'file' parts sent; send one (POST /classify/batch takes several)")
    (result,) = await _classify(request, dataplane, [form.file], _options(query, form))
    return result


@router.post("/classify/batch", responses=ERRORS)
async def classify_batch(
    request: Request,
    dataplane: DataPlaneDep,
    query: QueryOptions,
    form: Annotated[BatchForm, Form(media_type="multipart/form-data")],
) -> BatchClassification:
    """Classify several images in one request: one result each, in upload order (one bad file fails all)."""
    if len(form.files) > dataplane.settings.max_batch_files:
        raise PayloadTooLarge(
            f"{len(form.files)} files sent; at most {dataplane.settings.max_batch_files} per request"
        )
    return BatchClassification(results=await _classify(request, dataplane, form.files, _options(query, form)))


async def _classify(
    request: Request, dataplane: DataPlane, files: list[UploadFile], options: ClassifyOptions
) -> list[Classification]:
    served = dataplane.model(options.model)

    async def answer() -> Inference:
        images = await asyncio.gather(*(decode_upload(dataplane, f, served.net.input_spec) for f in files))
        engine, compare, raster = options.engine, options.compare, options.raster
        return await dataplane.infer(served, images, engine, compare, raster, client_id(request))

    inference = await while_connected(request, answer())
    server_ms = (time.perf_counter() - request.state.started) * 1000
    return [
        classification(inference, i, options.top_k, server_ms, safe_filename(file.filename))
        for i, file in enumerate(files)
    ]
