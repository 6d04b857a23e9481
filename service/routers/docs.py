"""GET /docs and /redoc: Swagger UI and ReDoc with their scripts from the fastapi-offline package, no CDN."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
ASSETS = StaticFiles(directory=Path(str(files("fastapi_offline") / "static")))

router = APIRouter(include_in_schema=False)


def _common(request: Request, viewer: str) -> tuple[dict[str, str], str]:
    """The viewer's OpenAPI URL and title, and the assets' base URL, behind any proxy prefix."""
    root = request.scope.get("root_path", "").rstrip("/")
    page = {"openapi_url": root + request.app.openapi_url, "title": f"{request.app.title} - {viewer}"}
    return page, root + ASSETS_URL


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI: try every route from the browser."""
    page, assets = _common(request, "Swagger UI")
    js, css, icon = (f"{assets}/{name}" for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"))
    return get_swagger_ui_html(**page, swagger_js_url=js, swagger_css_url=css, swagger_favicon_url=icon)


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc: the API reference on one page, without web fonts."""
    page, assets = _common(request, "ReDoc")
    js, icon = f"{assets}/redoc.standalone.js", f"{assets}/favicon.png"
    return get_redoc_html(**page, redoc_js_url=js, redoc_favicon_url=icon, with_google_fonts=False)
