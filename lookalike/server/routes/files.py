"""Files by id (originals, thumbnails), the page and the offline docs, login, and health."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from lookalike.errors import ImageError, LookalikeError
from lookalike.server.replies import HealthReply
from lookalike.server.routes import ServiceDep
from lookalike.server.schema import IMAGE_TYPES, errors
from lookalike.server.security import BEARER_REALM, same_token, token_cookie

router = APIRouter()

STATIC = Path(__file__).resolve().parent.parent / "static"
DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>lookalike API</title>
  <link rel="stylesheet" href="/docs-assets/swagger-ui.css">
  <link rel="icon" href="data:,">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs-assets/swagger-ui-bundle.js"></script>
  <script src="/static/docs.js"></script>
</body>
</html>
"""
"""Swagger UI from this server: FastAPI's own page loads it from a CDN (blank offline) with an inline script (which
the Content-Security-Policy forbids); here the initialiser is a static file."""


def swagger_assets() -> Path:
    """The Swagger UI files (5.x, which renders OpenAPI 3.1 as FastAPI writes it) shipped inside the
    ``fastapi-offline`` package, served under /docs-assets. Found without importing the package (it would patch
    nothing here, but it need not run at all)."""
    import importlib.util

    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise LookalikeError("the API docs need the fastapi-offline package: pip install fastapi-offline")
    return Path(spec.origin).parent / "static"


@router.get(
    "/api/images/{image_id}",
    summary="The original file of an indexed image",
    response_class=FileResponse,
    responses=errors(404, 422, body={"description": "The file as indexed.", "content": IMAGE_TYPES}),
)
async def image(svc: ServiceDep, image_id: int) -> FileResponse:
    path = svc.paths[svc.check_id(image_id)]
    if not path.is_file():
        raise HTTPException(404, f"image {image_id} ({svc.names[image_id]}) is no longer on disk")
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "public, max-age=3600"})


@router.get(
    "/api/thumbnails/{image_id}",
    summary="A JPEG thumbnail (256 px) of an indexed image, cached",
    response_class=Response,
    responses=errors(404, 422, body={"description": "JPEG", "content": {"image/jpeg": {}}}),
)
async def thumbnail(svc: ServiceDep, image_id: int) -> Response:
    svc.check_id(image_id)
    try:
        data = await anyio.to_thread.run_sync(svc.thumbs.get, image_id)
    except ImageError as exc:
        raise HTTPException(404, f"image {image_id} cannot be read any more: {exc}") from None
    return Response(
        data,
        media_type="image/jpeg",
        headers={"Cache-Control": "public, max-age=86400", "ETag": f'"{svc.hashes[image_id]}"'},
    )


@router.get(
    "/api/health",
    summary="Liveness, and what this index offers (classes, classifier, clusters)",
    response_model=HealthReply,
    response_model_exclude_unset=True,
    responses=errors(),
)
async def health(svc: ServiceDep) -> dict[str, Any]:
    return await anyio.to_thread.run_sync(svc.health)


@router.post(
    "/api/login",
    summary="Trade the server's token for an HttpOnly cookie, so the page and its images need no header",
    status_code=204,
    response_class=Response,
    responses=errors(422),
)
async def login(request: Request, token_field: Annotated[str, Form(alias="token", min_length=1)]) -> Response:
    token: str | None = request.app.state.token
    if token is None:
        return Response(status_code=204)  # an open server: nothing to log in to
    if not same_token(token_field.strip(), token):
        raise HTTPException(401, "wrong token", headers=BEARER_REALM)
    response = Response(status_code=204)
    token_cookie(response, token, https=request.url.scheme == "https")
    return response


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    return HTMLResponse(DOCS_PAGE, headers={"Cache-Control": "no-cache"})
