"""The web page and JSON API over an index: upload a photo, see its look-alikes, its room type and the clusters.

:func:`create_app` puts the pieces together: the :class:`~lookalike.server.service.Service` (the index and its model,
loaded once), the middlewares of :mod:`lookalike.server.security` (the token guard and security headers, the upload
limit, CORS when asked), one error shape for every failure, the routers of :mod:`lookalike.server.routes`, the page's
static files and the offline docs, and the schema completed by :mod:`lookalike.server.schema`.

Safety: files are only ever served by integer id from the index (never by a client-given path), request bodies are
counted while they arrive and cut off at the upload limit, and every failure a client can cause comes back as a
4xx with ``{"error": "one line"}`` while the server keeps serving. With a token (required by :func:`serve` on any
address but loopback) every API call needs it, as ``Authorization: Bearer`` or the cookie the page sets once the
token is typed in; only the page shell, the docs and the schema are open, and they hold no data. Every response
carries a Content-Security-Policy that allows this origin only, and the docs load Swagger UI from the installed
``fastapi-offline`` package, so nothing is fetched from elsewhere.

The schema (``/openapi.json``) says exactly what the API accepts and returns: every JSON reply is checked against
its strict model in :mod:`lookalike.server.replies` before it is sent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from lookalike.errors import ConfigError, LookalikeError
from lookalike.index import Index
from lookalike.server.routes import clusters, duplicates, files, map, search
from lookalike.server.routes.files import DOCS_PAGE, STATIC, swagger_assets
from lookalike.server.schema import (
    BODY_UNPARSABLE,
    ShownJSONResponse,
    allowed_methods,
    complete_schema,
    error_response,
    json_body,
    secure_schema,
    validation_message,
)
from lookalike.server.security import MULTIPART_SLACK, TOKEN_COOKIE, BodyLimit, Guard, check_token, is_loopback
from lookalike.server.service import MAX_K, MAX_RERANK, Service

__all__ = [
    "DOCS_PAGE",
    "MAX_K",
    "MAX_RERANK",
    "STATIC",
    "Service",
    "check_token",
    "create_app",
    "is_loopback",
    "json_body",
    "serve",
]

log = logging.getLogger("lookalike.server")


def create_app(
    index_dir: str | os.PathLike[str] | Index,
    *,
    max_upload_mb: float = 20,
    workers: int | None = None,
    thumb_cache: int = 2048,
    token: str | None = None,
    cors_origins: Sequence[str] = (),
) -> FastAPI:
    """The FastAPI app over one index (opened and its model loaded here, once).

    ``token``: when given, every API call needs it (see :class:`~lookalike.server.security.Guard`).
    ``cors_origins``: other origins whose pages may call the API from a browser; none by default, so only this
    server's page can.
    """
    if max_upload_mb <= 0:
        raise LookalikeError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    if workers is not None and workers < 1:
        raise LookalikeError(f"--workers must be at least 1, got {workers}")
    token = check_token(token)
    index = index_dir if isinstance(index_dir, Index) else Index.open(index_dir)
    svc = Service(index, workers=workers, thumb_cache=thumb_cache)
    max_bytes = int(max_upload_mb * 1024 * 1024)
    too_large = f"upload too large: the limit is {max_upload_mb:g} MB (server option --max-upload-mb)"

    app = FastAPI(
        title="lookalike",
        summary="Find look-alikes of a photo in an index, its room type, and the index's clusters.",
        version="0.1.0",
        default_response_class=ShownJSONResponse,
        docs_url=None,  # served by routes.files from the installed fastapi-offline's Swagger UI, not a CDN
        redoc_url=None,
    )
    app.state.service = svc
    app.state.token = token
    app.state.token_required = token is not None
    app.state.upload_limit = (max_bytes, too_large)
    app.add_middleware(BodyLimit, max_bytes=max_bytes + MULTIPART_SLACK, message=too_large)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(Guard, token=token)  # outermost: headers on every answer, the 401 before any work
    add_error_handlers(app)
    for area in (search, files, clusters, duplicates, map):
        app.include_router(area.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=swagger_assets()), name="docs-assets")
    schema = app.openapi()  # generated once here and completed with what FastAPI cannot infer
    complete_schema(schema, svc.classes)
    if token:
        secure_schema(schema, TOKEN_COOKIE)
    return app


def add_error_handlers(app: FastAPI) -> None:
    """Every failure as ``{"error": "one line"}``: 4xx for what a client caused, 500 (logged) for the rest."""

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 400:  # only the body parsers raise a 400 HTTPException (ours are LookalikeErrors)
            kind = request.headers.get("content-type", "").partition(";")[0] or "no content type"
            detail = "" if exc.detail == BODY_UNPARSABLE else f": {str(exc.detail).rstrip('.')}"
            return error_response(422, f"the request body cannot be parsed as {kind}{detail}")
        if exc.status_code == 405:  # Starlette names the methods of the first route on the path; say all of them
            headers["Allow"] = ", ".join(allowed_methods(app, request.url.path))
        return error_response(exc.status_code, str(exc.detail), headers or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, validation_message(exc))

    @app.exception_handler(LookalikeError)
    async def _lookalike_error(request: Request, exc: LookalikeError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")


def serve(
    index_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: float = 20,
    workers: int | None = None,
    token: str | None = None,
    insecure: bool = False,
    cors_origins: Sequence[str] = (),
    log_level: str = "info",
) -> None:
    """Load the index and its model, then serve the page and the API until interrupted.

    On an address other than loopback the server is reachable by anyone on the network and serves every indexed
    photo, so it refuses to start without a ``token`` unless ``insecure`` says that is meant.
    """
    import uvicorn

    token = check_token(token)
    if token is None and not insecure and not is_loopback(host):
        raise ConfigError(
            f"token needed to serve on {host}: anyone who can reach it could see every indexed photo; give a token "
            "(or set LOOKALIKE_TOKEN), or allow an open server explicitly with insecure",
            setting="token",
        )
    app = create_app(index_dir, max_upload_mb=max_upload_mb, workers=workers, token=token, cors_origins=cors_origins)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
