"""What the routers share: the data plane as a dependency, uploads, the caller, cancelling on disconnect."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import Annotated, TypeVar

import torch
from fastapi import Depends, Request, UploadFile

from converter.snn import InputSpec
from service.dataplane import DataPlane
from service.errors import ClientDisconnected

T = TypeVar("T")
# C0 and C1 controls, DEL, and the bidirectional marks, embeddings, overrides and isolates
UNSAFE_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
MAX_FILENAME = 255


async def decode_upload(dataplane: DataPlane, upload: UploadFile, spec: InputSpec) -> torch.Tensor:
    """Read a multipart upload and decode it for a model's input; errors name the file."""
    data = await upload.read()
    return await dataplane.decode(data, upload.content_type, spec, safe_filename(upload.filename) or "upload")


def client_id(request: Request) -> str:
    """Who sent ``request``, for the per-client share of the batch queues: its remote address."""
    return request.client.host if request.client is not None else ""


def safe_filename(name: str | None) -> str | None:
    """An uploaded file's name fit to echo: no control or bidirectional-override characters, 255 at most."""
    return None if name is None else UNSAFE_CHARACTERS.sub("", name)[:MAX_FILENAME]


async def while_connected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first: then cancel it and raise ClientDisconnected.

    Call it once the request body has been read: from then on the only message the server can send is
    ``http.disconnect``. Cancelling the work takes the request's images off the batch queues.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():  # the client has gone, or this request is cancelled (the server is stopping)
            task.cancel()
            await asyncio.wait((task,))  # until it has taken its images off the queues
    if task.cancelled():
        raise ClientDisconnected("the client closed the connection before its answer was ready")
    return task.result()


async def _disconnected(request: Request) -> None:
    """Return when the server reports that the client has gone."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def get_dataplane(request: Request) -> DataPlane:
    """The app's data plane (a FastAPI dependency)."""
    return request.app.state.dataplane


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
