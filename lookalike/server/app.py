"""The web page and JSON API over an index: upload a photo, see its look-alikes, its room type and the clusters.

One :class:`Service` per process holds the opened index with its model, FAISS searcher and lookup tables, all loaded
once at start-up so the first request is not the slow one. Inference (decode, model, search) runs in worker threads
behind a capacity limiter: the event loop keeps serving pages, thumbnails and health checks while the CPU works, and
at most ``workers`` model calls compete for the cores at once instead of every waiting request thrashing them.

Safety: files are only ever served by integer id from the index (never by a client-given path), request bodies are
counted while they arrive and cut off at the upload limit, and every failure a client can cause comes back as a
4xx with ``{"error": "one line"}`` while the server keeps serving.
"""

from __future__ import annotations

import io
import logging
import mimetypes
import os
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import anyio
import anyio.to_thread
import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookalike.errors import ImageError, LookalikeError
from lookalike.images import content_hash, decode, load_image
from lookalike.index import MODES, Index
from lookalike.io import atomic_write
from lookalike.store import CLUSTERS_FILE, THUMBNAILS_DIR

log = logging.getLogger("lookalike.server")

STATIC = Path(__file__).parent / "static"
MAX_K = 100
MAX_RERANK = 200
THUMB_SIZE = 256
MULTIPART_SLACK = 64 * 1024
"""Room for multipart headers and the small form fields on top of the image itself."""

Mode = Literal["all", "same-class", "other-classes"]
# Form fields, at module level so FastAPI can resolve them (annotations are strings under `from __future__`).
KField = Annotated[int, Form(ge=1, le=MAX_K, description="How many matches.")]
ModeField = Annotated[Mode, Form(description="all, same-class (the query's class) or other-classes.")]
FileField = Annotated[UploadFile | None, File(description="The query image (JPEG, PNG, WebP, ...).")]
IdField = Annotated[int | None, Form(alias="id", description="Or: the id of an indexed image to search from.")]
ClassField = Annotated[str | None, Form(alias="class", description="The query's class, for class modes.")]
RerankField = Annotated[
    int,
    Form(
        ge=0,
        le=MAX_RERANK,
        description="Re-rank the top this many by geometric verification (local features); 0 = off. Each match "
        "then carries its inlier count.",
    ),
]

T = TypeVar("T")


class BodyLimit:
    """Refuse request bodies over ``max_bytes``: by Content-Length up front, else by counting chunks as they arrive.

    Starlette spools a whole multipart body before the endpoint sees it, so the limit has to sit in front of the
    parser; raising HTTPException from ``receive`` is passed through FastAPI's body parsing unchanged.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, message: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await JSONResponse({"error": self.message}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(status_code=413, detail=self.message)
            return message

        await self.app(scope, limited, send)


class ThumbnailCache:
    """JPEG thumbnails by image id: an in-memory LRU in front of files under ``<index>/thumbnails``.

    Disk files are named by the image's content hash, so an image changed and re-indexed gets a fresh thumbnail and a
    stale one is never served; a read-only index folder just means no disk cache.
    """

    def __init__(self, index: Index, hashes: list[str], size: int = THUMB_SIZE, capacity: int = 2048) -> None:
        self.paths = index.paths
        self.hashes = hashes
        self.size = size
        self.capacity = capacity
        self.folder: Path | None = index.store.path / THUMBNAILS_DIR / str(size)
        self._lru: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, image_id: int) -> bytes:
        with self._lock:
            data = self._lru.get(image_id)
            if data is not None:
                self._lru.move_to_end(image_id)
                return data
        data = self._from_disk(image_id) or self._make(image_id)
        with self._lock:
            self._lru[image_id] = data
            while len(self._lru) > self.capacity:
                self._lru.popitem(last=False)
        return data

    def _disk_path(self, image_id: int) -> Path | None:
        return self.folder / f"{self.hashes[image_id]}.jpg" if self.folder else None

    def _from_disk(self, image_id: int) -> bytes | None:
        path = self._disk_path(image_id)
        try:
            return path.read_bytes() if path else None
        except OSError:
            return None

    def _make(self, image_id: int) -> bytes:
        img = load_image(self.paths[image_id], target=self.size)
        img.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85, optimize=True)
        data = buf.getvalue()
        path = self._disk_path(image_id)
        if path is not None:
            try:
                atomic_write(path, data)
            except OSError as exc:
                log.warning("thumbnail disk cache disabled (%s)", exc)
                self.folder = None
        return data


class Service:
    """Everything a request needs, loaded once: the index, its model, lookups by id/hash/name, the thumbnail cache."""

    def __init__(self, index: Index, *, workers: int | None = None, thumb_cache: int = 2048) -> None:
        self.index = index
        self.names: list[str] = index.names
        self.paths: list[Path] = index.paths
        self.labels: list[str | None] = index.labels
        self.classes: list[str] = index.classes
        self.hashes: list[str] = index.store.column("hash")
        self.by_name = {n: i for i, n in enumerate(self.names)}
        self.vectors = index.vectors
        self.model_name = index.store.meta["model"]["name"]
        if len(index) == 0:
            raise LookalikeError(f"the index at {index.store.path} is empty; run `lookalike index` first")
        index.searcher  # noqa: B018 - builds the FAISS index now, not inside the first request
        self.resolution = index.describer.resolution  # loads the model now
        index.embed([Image.new("RGB", (64, 64), (127, 127, 127))])  # first inference allocates; do it at start-up
        self.can_classify = len(self.classes) >= 2 and callable(getattr(index, "classify", None))
        if self.can_classify:
            self.predict(self.vectors[:1], [0], quiet=True)  # loads (or attaches) the classifier head now
        self.thumbs = ThumbnailCache(index, self.hashes, capacity=thumb_cache)
        self.limiter = anyio.CapacityLimiter(workers or os.cpu_count() or 1)
        self._clusters: tuple[float, dict[str, Any] | None] | None = None
        self._clusters_lock = threading.Lock()
        self._sheets: dict[tuple[float, int], bytes] = {}

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU work in a worker thread, at most ``workers`` at once, so the event loop is never blocked."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    # --- ids -----------------------------------------------------------------------------------------------------

    def check_id(self, image_id: int) -> int:
        n = len(self.names)
        if not 0 <= image_id < n:
            raise HTTPException(404, f"no image with id {image_id}; ids run from 0 to {n - 1}")
        return image_id

    def describe_id(self, image_id: int) -> dict[str, Any]:
        return {
            "id": image_id,
            "name": self.names[image_id],
            "label": self.labels[image_id],
            "thumbnail": f"/api/thumbnails/{image_id}",
            "image": f"/api/images/{image_id}",
        }

    # --- queries -------------------------------------------------------------------------------------------------

    def upload_query(self, data: bytes, filename: str) -> tuple[np.ndarray, list[int], dict[str, Any]]:
        """Decode and embed an uploaded image; a byte-identical copy of an indexed image is excluded from its matches."""
        img, meta = decode(data, filename, target=self.resolution)
        vec = self.index.embed([img])
        same = self.index.hash_ids(content_hash(data))
        info = {"id": None, "name": filename, "label": None, "width": meta.width, "height": meta.height}
        if same:
            info["same_as"] = same
        return vec, same, info

    def id_query(self, image_id: int) -> tuple[np.ndarray, list[int], dict[str, Any]]:
        """An indexed image as a query: its stored vector (no decode, no model) and itself excluded from the matches."""
        same = self.index.hash_ids(self.hashes[image_id]) or [image_id]
        return self.vectors[image_id : image_id + 1], same, self.describe_id(image_id)

    def search(
        self,
        vec: np.ndarray,
        exclude: list[int],
        query: dict[str, Any],
        k: int,
        mode: str,
        label: str | None,
        rerank: int = 0,
        data: bytes | None = None,
    ) -> dict[str, Any]:
        image = None
        if rerank and data is not None:  # an upload is verified from its own pixels, at the features' resolution
            image = decode(data, query.get("name") or "upload", target=self.index.features.conf.resolution)[0]
        result = self.index.search_many(
            [vec],
            k,
            mode=mode,
            label=label,
            exclude=[exclude],
            rerank=rerank,
            query_images=[image] if rerank else None,
        )[0]
        out = {
            "query": query,
            "mode": mode,
            "k": k,
            "rerank": rerank,
            "query_class": result.query_class,
            "class_source": result.class_source,
            "matches": [
                {**self.describe_id(m.id), "rank": m.rank, "score": round(m.score, 6), "inliers": m.inliers}
                for m in result.matches
            ],
            "prediction": self.predict(vec, exclude, quiet=True),
        }
        return out

    def match_pair(self, a: int, b: int) -> dict[str, Any]:
        return self.index.match_pair(self.check_id(a), self.check_id(b))

    def match_png(self, a: int, b: int) -> bytes:
        from lookalike.plots import match_png

        pair = self.match_pair(a, b)
        title = (
            f"{self.names[a]}  ↔  {self.names[b]}: {pair['inliers']} inliers of {pair['tentative']} ({pair['status']})"
        )
        sizes = (tuple(pair["size_a"]), tuple(pair["size_b"]))
        return match_png(self.paths[a], self.paths[b], pair["matches"], sizes, title=title)  # type: ignore[arg-type]

    def classify(self, vec: np.ndarray, exclude: list[int]) -> list[Any]:
        """``Index.classify`` on a vector; an indexed image (search by id, or an uploaded copy) must not vote for
        itself, which only the vector-level function can be told."""
        try:
            from lookalike.classify import classify_vectors
        except ImportError:
            return self.index.classify([vec])  # type: ignore[attr-defined]
        return classify_vectors(self.index, vec, exclude=[exclude])

    def predict(self, vec: np.ndarray, exclude: Sequence[int] = (), *, quiet: bool = False) -> dict[str, Any] | None:
        """The room type with per-class probabilities; None when the index cannot classify and ``quiet``."""
        if quiet and not self.can_classify:
            return None
        if not callable(getattr(self.index, "classify", None)):
            raise LookalikeError("this lookalike has no classifier (Index.classify); update it to classify")
        try:
            return self.classify(vec, list(exclude))[0].to_dict()
        except LookalikeError:
            if quiet:
                return None
            raise
        except Exception:
            if quiet:  # a search must not fail because the classifier did
                log.exception("classification failed")
                return None
            raise

    # --- clusters ------------------------------------------------------------------------------------------------

    def clusters(self) -> dict[str, Any]:
        """The index's saved clustering (``lookalike cluster``) with paths turned into ids; reread when it changes."""
        path = self.index.store.path / CLUSTERS_FILE
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = -1.0
        with self._clusters_lock:
            if self._clusters is None or self._clusters[0] != mtime:
                self._clusters = (mtime, self._load_clusters())
            data = self._clusters[1]
        if data is None:
            return {"available": False, "clusters": [], "noise": [], "metrics": {}}
        return data

    def cluster_sheet(self, cluster_id: int) -> bytes:
        """A PNG contact sheet of one cluster (``lookalike.cluster.contact_sheet``), kept until the clusters change."""
        data = self.clusters()
        cluster = next((c for c in data["clusters"] if c["id"] == cluster_id), None)
        if cluster is None:
            known = ", ".join(str(c["id"]) for c in data["clusters"][:20]) or "none: run `lookalike cluster`"
            raise HTTPException(404, f"no cluster {cluster_id} in this index (clusters: {known})")
        key = (self._clusters[0] if self._clusters else -1.0, cluster_id)
        with self._clusters_lock:
            if key in self._sheets:
                return self._sheets[key]
        from lookalike.cluster import contact_sheet

        with tempfile.TemporaryDirectory() as tmp:
            title = f"cluster {cluster_id}: {cluster['size']} images"
            out = contact_sheet([self.paths[i] for i in cluster["ids"]], Path(tmp) / "sheet.png", title=title)
            png = out.read_bytes()
        with self._clusters_lock:
            self._sheets = {k: v for k, v in self._sheets.items() if k[0] == key[0]}
            self._sheets[key] = png
        return png

    def _load_clusters(self) -> dict[str, Any] | None:
        try:
            from lookalike.cluster import load_clusters  # type: ignore[attr-defined]
        except ImportError:
            return None
        try:
            raw = load_clusters(self.index)
        except LookalikeError as exc:
            log.warning("clusters not shown: %s", exc)
            return None
        if not raw:
            return None
        root = self.index.root

        def ids_of(paths: list[str]) -> list[int]:
            ids = []
            for p in paths:
                name = str(p)
                if os.path.isabs(name):
                    try:
                        name = Path(name).relative_to(root).as_posix()
                    except ValueError:
                        continue
                if name in self.by_name:
                    ids.append(self.by_name[name])
            return ids

        clusters = []
        for c in raw.get("clusters", []):
            ids = ids_of(c.get("paths", []))
            if not ids:
                continue
            counts = Counter(self.labels[i] for i in ids if self.labels[i] is not None)
            clusters.append(
                {
                    "id": c.get("id"),
                    "size": len(ids),
                    "ids": ids,
                    "labels": dict(counts.most_common()),
                    "gps": c.get("gps"),
                }
            )
        return {
            "available": True,
            "clusters": clusters,
            "noise": ids_of(raw.get("noise", [])),
            "metrics": raw.get("metrics", {}),
        }

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "images": len(self.names),
            "model": self.model_name,
            "classes": self.classes,
            "classify": self.can_classify,
            "clusters": self.clusters()["available"],
            "modes": list(MODES),
            "max_k": MAX_K,
        }


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path", "form"))
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def create_app(
    index_dir: str | os.PathLike[str] | Index,
    *,
    max_upload_mb: float = 20,
    workers: int | None = None,
    thumb_cache: int = 2048,
) -> FastAPI:
    """The FastAPI app over one index (opened and its model loaded here, once)."""
    if max_upload_mb <= 0:
        raise LookalikeError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    if workers is not None and workers < 1:
        raise LookalikeError(f"--workers must be at least 1, got {workers}")
    index = index_dir if isinstance(index_dir, Index) else Index.open(index_dir)
    svc = Service(index, workers=workers, thumb_cache=thumb_cache)
    max_bytes = int(max_upload_mb * 1024 * 1024)
    too_large = f"upload too large: the limit is {max_upload_mb:g} MB (server option --max-upload-mb)"

    app = FastAPI(
        title="lookalike",
        summary="Find look-alikes of a photo in an index, its room type, and the index's clusters.",
        version="0.1.0",
    )
    app.state.service = svc
    app.add_middleware(BodyLimit, max_bytes=max_bytes + MULTIPART_SLACK, message=too_large)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(LookalikeError)
    async def _lookalike_error(request: Request, exc: LookalikeError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")

    async def read_upload(file: UploadFile) -> bytes:
        data = await file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, too_large)
        return data

    async def make_query(
        file: UploadFile | None, image_id: int | None
    ) -> tuple[np.ndarray, list[int], dict, bytes | None]:
        if (file is None) == (image_id is None):
            raise HTTPException(
                422, "send either an image as the multipart field 'file' or the 'id' of an indexed image"
            )
        if image_id is not None:
            return (*svc.id_query(svc.check_id(image_id)), None)
        assert file is not None
        data = await read_upload(file)
        name = Path(file.filename or "upload").name or "upload"
        return (*await svc.run(svc.upload_query, data, name), data)

    async def do_search(
        file: UploadFile | None, image_id: int | None, k: int, mode: str, label: str | None, rerank: int = 0
    ) -> dict:
        started = time.perf_counter()
        vec, exclude, query, data = await make_query(file, image_id)
        out = await svc.run(svc.search, vec, exclude, query, k, mode, label, rerank, data)
        out["seconds"] = round(time.perf_counter() - started, 4)  # decode, model, search, re-rank and classify
        return out

    @app.post("/api/search", summary="Look-alikes of an uploaded image (or of an indexed image by id)")
    async def search_post(
        file: FileField = None,
        image_id: IdField = None,
        k: KField = 5,
        mode: ModeField = "all",
        label: ClassField = None,
        rerank: RerankField = 0,
    ) -> dict[str, Any]:
        return await do_search(file, image_id, k, mode, label, rerank)

    @app.get("/api/search", summary="Look-alikes of an indexed image, by id")
    async def search_get(
        image_id: Annotated[int, Query(alias="id")],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 5,
        mode: Annotated[Mode, Query()] = "all",
        label: Annotated[str | None, Query(alias="class")] = None,
        rerank: Annotated[int, Query(ge=0, le=MAX_RERANK)] = 0,
    ) -> dict[str, Any]:
        return await do_search(None, image_id, k, mode, label, rerank)

    @app.get("/api/matches", summary="Matched keypoints of two indexed images and their geometric verdict")
    async def matches(
        a: Annotated[int, Query(description="id of the first image")],
        b: Annotated[int, Query(description="id of the second image")],
    ) -> dict[str, Any]:
        """``matches`` rows are (xa, ya, xb, yb, inlier) in each image's own pixels."""
        return await svc.run(svc.match_pair, a, b)

    @app.get("/api/matches.png", summary="The two images side by side with their matched keypoints drawn")
    async def matches_png(a: Annotated[int, Query()], b: Annotated[int, Query()]) -> Response:
        png = await svc.run(svc.match_png, a, b)
        return Response(png, media_type="image/png")

    @app.post("/api/classify", summary="Room type of an uploaded image (or an indexed one by id), with probabilities")
    async def classify(file: FileField = None, image_id: IdField = None) -> dict[str, Any]:
        vec, exclude, query, _ = await make_query(file, image_id)
        prediction = await svc.run(svc.predict, vec, exclude)
        return {"query": query, **(prediction or {})}

    @app.get("/api/images/{image_id}", summary="The original file of an indexed image")
    async def image(image_id: int) -> FileResponse:
        path = svc.paths[svc.check_id(image_id)]
        if not path.is_file():
            raise HTTPException(404, f"image {image_id} ({svc.names[image_id]}) is no longer on disk")
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/api/thumbnails/{image_id}", summary="A JPEG thumbnail (256 px) of an indexed image, cached")
    async def thumbnail(image_id: int) -> Response:
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

    @app.get("/api/clusters", summary="The index's clusters (from `lookalike cluster`), as image ids")
    async def clusters() -> dict[str, Any]:
        return await anyio.to_thread.run_sync(svc.clusters)

    @app.get("/api/clusters/{cluster_id}/sheet.png", summary="A contact sheet (PNG) of one cluster's images")
    async def cluster_sheet(cluster_id: int) -> Response:
        png = await svc.run(svc.cluster_sheet, cluster_id)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.get("/api/health", summary="Liveness, and what this index offers (classes, classifier, clusters)")
    async def health() -> dict[str, Any]:
        return await anyio.to_thread.run_sync(svc.health)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def serve(
    index_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: float = 20,
    workers: int | None = None,
    log_level: str = "info",
) -> None:
    """Load the index and its model, then serve the page and the API until interrupted."""
    import uvicorn

    app = create_app(index_dir, max_upload_mb=max_upload_mb, workers=workers)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
