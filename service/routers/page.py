"""GET /: the page for people, and its assets under /assets; both open (its API calls carry the key)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "static"
ASSETS_URL = "/assets"
ASSETS = StaticFiles(directory=STATIC)
# Every byte the page loads or sends comes from this server; images are previewed from blob: URLs.
POLICY = (
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    """The page: choose an image, see its answer, what it cost, spikes per layer and its spike raster."""
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": POLICY})
