"""The web page and JSON API over an index: upload a photo, see its look-alikes, its room type and the clusters.

One :class:`Service` per process holds the opened index with its model, FAISS searcher and lookup tables, all loaded
once at start-up so the first request is not the slow one. Inference (decode, model, search) runs in worker threads
behind a capacity limiter: the event loop keeps serving pages, thumbnails and health checks while the CPU works, and
at most ``workers`` model calls compete for the cores at once instead of every waiting request thrashing them.

Safety: files are only ever served by integer id from the index (never by a client-given path), request bodies are
counted while they arrive and cut off at the upload limit, and every failure a client can cause comes back as a
4xx with ``{"error": "one line"}`` while the server keeps serving. With a token (required by :func:`serve` on any
address but loopback) every API call, the schema and the docs need it, as ``Authorization: Bearer`` or the cookie
the page sets once the token is typed in; only the page shell and its static files are open, and they hold no data.
Every response carries a Content-Security-Policy that allows this origin only, and the docs load Swagger UI from
the installed ``fastapi-offline`` package, so nothing is fetched from elsewhere.

The schema (``/openapi.json``) says exactly what the API accepts (:func:`complete_schema`) and returns: every JSON
reply is checked against its strict model in :mod:`lookalike.server.replies` before it is sent.
"""

from __future__ import annotations

import base64
import hmac
import io
import ipaddress
import json
import logging
import mimetypes
import os
import re
import socket
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, StrictInt, ValidationError
from pydantic import Field as PydanticField
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookalike.errors import ConfigError, ImageError, LookalikeError
from lookalike.filters import SearchFilter
from lookalike.images import IMAGE_EXTENSIONS, decode, load_image
from lookalike.index import MODES, Index
from lookalike.io import atomic_write, shown_json
from lookalike.query import from_bytes, from_id
from lookalike.server.replies import (
    ClassifyReply,
    ClusterMetrics,
    ClustersReply,
    DecisionKind,
    DecisionReply,
    DuplicatesReply,
    ErrorBody,
    HealthReply,
    MapInfo,
    MapReply,
    MatchesReply,
    Mode,
    NoMapReply,
    Plan,
    SearchReply,
    SelectionReply,
)
from lookalike.store import CLUSTERS_FILE, DECISIONS_FILE, MAP_FILE, THUMBNAILS_DIR

log = logging.getLogger("lookalike.server")

STATIC = Path(__file__).parent / "static"
MAX_K = 100
MAX_RERANK = 200
THUMB_SIZE = 256
MULTIPART_SLACK = 64 * 1024
"""Room for multipart headers and the small form fields on top of the image itself."""

# Form fields, at module level so FastAPI can resolve them (annotations are strings under `from __future__`).
KField = Annotated[int, Form(ge=1, le=MAX_K, description="How many matches.")]
ModeField = Annotated[Mode, Form(description="all, same-class (the query's class) or other-classes.")]
FileField = Annotated[UploadFile | None, File(description="The query image (JPEG, PNG, WebP, ...).")]
IdField = Annotated[int | None, Form(alias="id", description="Or: the id of an indexed image to search from.")]
ClassField = Annotated[str | None, Form(alias="class", description="The query's class, for class modes.")]
AfterField = Annotated[str | None, Form(description="Filter: taken on or after this date (EXIF), 2023-01-01.")]
BeforeField = Annotated[str | None, Form(description="Filter: taken on or before this date (EXIF), 2023-12-31.")]
NearField = Annotated[str | None, Form(description="Filter: within a radius of a point (EXIF GPS): lat,lon,km.")]
PathField = Annotated[str | None, Form(description="Filter: relative path matches this glob, site-a/**.")]
LabelField = Annotated[str | None, Form(alias="label", description="Filter: only images with this label.")]
MinScoreField = Annotated[str | None, Form(description="Filter: leave out matches scoring below this cosine.")]
RerankField = Annotated[
    int,
    Form(
        ge=0,
        le=MAX_RERANK,
        description="Re-rank the top this many by geometric verification (local features); 0 = off. Each match "
        "then carries its inlier count.",
    ),
]
CollapseField = Annotated[
    bool, Form(description="One match per copy group (its keeper); the ids of the copies folded are in `folded`.")
]

_DATE = r"([0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_TIME = r"T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
_LAT = r"-?(90(\.0*)?|[1-8]?[0-9](\.[0-9]*)?)"
_LON = r"-?(180(\.0*)?|(1[0-7][0-9]|[1-9]?[0-9])(\.[0-9]*)?)"
_KM = r"([0-9]*[1-9][0-9]*(\.[0-9]*)?|[0-9]*\.[0-9]*[1-9][0-9]*)"
_COSINE = r"-?(0(\.[0-9]*)?|\.[0-9]+|1(\.0*)?|[0-9](\.[0-9]*)?[eE]-0*[1-9][0-9]*)"
FILTER_FORMS: dict[str, tuple[str, str]] = {
    "after": (rf" *({_DATE}({_TIME})?)? *", "a date (2023-12-31) or date-time (2023-12-31T18:00[:00[.000000]])"),
    "before": (rf" *({_DATE}({_TIME})?)? *", "a date (2023-12-31) or date-time (2023-12-31T18:00[:00[.000000]])"),
    "near": (rf" *({_LAT} *, *{_LON} *, *{_KM})? *", "latitude,longitude,radius in km (48.8867,2.3431,0.5)"),
    "min_score": (rf" *({_COSINE})? *", "a cosine between -1 and 1 in decimal notation (0.8)"),
}
"""The written form of each filter field the API accepts (a full match; ASCII digits; blank means unset), stated as
the schema's ``pattern`` and checked by the server before the values are parsed, so the schema says exactly what is
accepted. What a pattern cannot say (a real calendar day, ``after`` not later than ``before``, a radius that is a
finite number) is a 400 with its own message."""


def check_filter_forms(values: dict[str, str | None]) -> None:
    """A 400 for a filter value outside its documented form (the parser's own message when it has one)."""
    for name, value in values.items():
        if value is None or name not in FILTER_FORMS or re.fullmatch(FILTER_FORMS[name][0], value, re.ASCII):
            continue
        SearchFilter.parse(**{name: value})  # raises ConfigError (a 400) with the precise reason when it has one
        raise ConfigError(f"{name} must be written as {FILTER_FORMS[name][1]}, got {value!r}", setting=name)


T = TypeVar("T")
NO_CLUSTERS: dict[str, Any] = {"available": False, "clusters": [], "noise": [], "metrics": {}}

TOKEN_COOKIE = "lookalike_token"
MIN_TOKEN_CHARS = 16
OPEN_PATHS = ("/", "/api/login", "/docs", "/openapi.json")
"""The page shell, the docs shell, the schema (the API's shape, public anyway) and the login call: no index data, and
the page must load to ask for the token."""
OPEN_PREFIXES = ("/static/", "/docs-assets/")
SECURITY_HEADERS = {
    # Own origin only: no CDN, no inline script, no framing (clickjacking), no plugins; data:/blob: images are the
    # page's icon and the preview of a photo picked on the user's own machine.
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


IMAGE_TYPES = {t: {} for t in ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff")}
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


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (a name counts only if it resolves to loopback)."""
    name = host.strip("[]")
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(name, None)}
    except OSError:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def check_token(token: str | None) -> str | None:
    """A token guessable in a lifetime of tries is no lock: refuse short ones with a way to make a good one."""
    if token is None:
        return None
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or " " in token:
        raise ConfigError(
            f"token must be at least {MIN_TOKEN_CHARS} printable characters without spaces; make one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe())'`",
            setting="token",
        )
    return token


class Guard:
    """Security headers on every response and, with a token, a 401 for anything but the page shell without it.

    A pure ASGI middleware (not ``BaseHTTPMiddleware``) so file and streaming responses pass through unbuffered. The
    token is compared in constant time (``hmac.compare_digest``) from the ``Authorization: Bearer`` header or the
    HttpOnly cookie the page gets from ``POST /api/login``.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    def allowed(self, scope: Scope) -> bool:
        if self.token is None:
            return True
        path = scope.get("path", "")
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return True
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"")
        scheme, _, given = auth.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token):
            return True
        for part in headers.get(b"cookie", b"").split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == TOKEN_COOKIE.encode() and hmac.compare_digest(value, self.token):
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        if not self.allowed(scope):
            await _error(
                401,
                "this server needs its token: send `Authorization: Bearer TOKEN`, or enter it on the page",
                {"WWW-Authenticate": 'Bearer realm="lookalike"'},
            )(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)


class Selection(BaseModel):
    """Image ids chosen on the map: JSON integers only (``true`` is no id 1, ``"3"`` no id 3)."""

    model_config = {"extra": "forbid"}

    ids: list[StrictInt] = PydanticField(min_length=1, max_length=1_000_000)


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
        self.folder: Path | None = index.folder / THUMBNAILS_DIR / str(size)
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
        self.hashes: list[str] = index.hashes
        self.by_name = {n: i for i, n in enumerate(self.names)}
        self.vectors = index.vectors
        self.model_name = index.config.model
        if len(index):  # an empty index (every photo removed) is served too: its page says what to run
            index.searcher  # noqa: B018 - builds the FAISS index now, not inside the first request
        self.resolution = index.describer.resolution  # loads the model now
        index.embed([Image.new("RGB", (64, 64), (127, 127, 127))])  # first inference allocates; do it at start-up
        self.can_classify = len(self.classes) >= 2 and callable(getattr(index, "classify", None))
        if self.can_classify:
            self.predict(self.vectors[:1], [0], quiet=True)  # loads (or attaches) the classifier head now
        self.thumbs = ThumbnailCache(index, self.hashes, capacity=thumb_cache)
        self.limiter = anyio.CapacityLimiter(workers or os.cpu_count() or 1)
        self._clusters: tuple[tuple[int, ...], dict[str, Any], bytes] | None = None
        self._clusters_lock = threading.Lock()
        self._sheets: dict[tuple[float, int], bytes] = {}
        self._map: tuple[tuple[float, float], dict[str, Any], bytes] | None = None
        self._map_lock = threading.Lock()
        self._dups: tuple[float, dict[str, Any], bytes] | None = None
        self._dups_lock = threading.Lock()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU work in a worker thread, at most ``workers`` at once, so the event loop is never blocked."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    # --- ids -----------------------------------------------------------------------------------------------------

    def why_no_classifier(self) -> str:
        n = len(self.classes)
        have = "no labels" if n == 0 else f"only one class ({self.classes[0]})"
        return (
            f"this index cannot classify: it has {have}, and a classifier needs two or more; build it with "
            "`lookalike index PHOTOS --labels folders` from one folder per class"
        )

    def check_id(self, image_id: int) -> int:
        n = len(self.names)
        if not 0 <= image_id < n:
            known = f"ids run from 0 to {n - 1}" if n else "the index is empty"
            raise HTTPException(404, f"no image with id {image_id}; {known}")
        return image_id

    def why_empty(self) -> str:
        return (
            f"the index at {self.index.folder} has no images: add photos to {self.index.root} and run "
            "`lookalike index` on it"
        )

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
        q = from_bytes(self.index, data, filename)
        img, meta, same = q.image, q.meta, q.self_ids
        assert img is not None and meta is not None
        info = {
            "id": None,
            "name": filename,
            "label": None,
            "width": meta.width,
            "height": meta.height,
            "preview": _preview_url(img),
        }
        if same:
            info["same_as"] = same
        return q.vector, same, info

    def id_query(self, image_id: int) -> tuple[np.ndarray, list[int], dict[str, Any]]:
        """An indexed image as a query: its stored vector (no decode, no model) and itself excluded from the matches."""
        q = from_id(self.index, image_id)
        return q.vector, q.self_ids, self.describe_id(image_id)

    def search(
        self,
        vec: np.ndarray,
        exclude: list[int],
        query: dict[str, Any],
        k: int,
        mode: str,
        label: str | None,
        where: SearchFilter | None = None,
        rerank: int = 0,
        data: bytes | None = None,
        collapse: bool = False,
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
            where=where or None,
            rerank=rerank,
            query_images=[image] if rerank else None,
            collapse=collapse,
        )[0]
        out = {
            "query": query,
            "mode": mode,
            "k": k,
            "rerank": rerank,
            "query_class": result.query_class,
            "class_source": result.class_source,
            "filter": result.filter,
            "note": result.note,
            "matches": [
                {**self.describe_id(m.id), "rank": m.rank, "score": round(m.score, 6), "inliers": m.inliers}
                | ({"folded": m.folded} if m.folded is not None else {})
                for m in result.matches
            ],
            "prediction": self.predict(vec, exclude, quiet=True),
        }
        if collapse:
            out["collapse"] = True
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
        return self._clusters_state()[1]

    def clusters_json(self) -> bytes:
        """:meth:`clusters` as the reply body, rendered once per clustering: at 100,000 ids, validating and encoding
        it on every request would cost more than the request."""
        return self._clusters_state()[2]

    def _clusters_state(self) -> tuple[tuple[int, ...], dict[str, Any], bytes]:
        path = self.index.folder / CLUSTERS_FILE
        try:
            st = path.stat()
            # every atomic rewrite is a new inode: a re-clustering within one mtime tick is still seen
            version: tuple[int, ...] = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            version = ()
        with self._clusters_lock:
            if self._clusters is None or self._clusters[0] != version:
                data = self._load_clusters()
                try:
                    data = reply_content(ClustersReply, data) if data else None
                except ValidationError as exc:  # a file holding other than what `lookalike cluster` writes
                    log.warning("clusters not shown: %s in %s", exc, CLUSTERS_FILE)
                    data = None
                data = data or reply_content(ClustersReply, NO_CLUSTERS)
                self._clusters = (version, data, json_body(data))
            return self._clusters

    def cluster_sheet(self, cluster_id: int) -> bytes:
        """A PNG contact sheet of one cluster (``lookalike.cluster.contact_sheet``), kept until the clusters change."""
        data = self.clusters()
        cluster = next((c for c in data["clusters"] if c["id"] == cluster_id), None)
        if cluster is None:
            known = ", ".join(str(c["id"]) for c in data["clusters"][:20]) or "none: run `lookalike cluster`"
            raise HTTPException(404, f"no cluster {cluster_id} in this index (clusters: {known})")
        key = (self._clusters[0] if self._clusters else (), cluster_id)
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

    # --- duplicates ------------------------------------------------------------------------------------------------

    def _decisions_mtime(self) -> float:
        try:
            return (self.index.folder / DECISIONS_FILE).stat().st_mtime
        except OSError:
            return -1.0

    def duplicates(self) -> dict[str, Any]:
        """A dry-run plan (``lookalike.cluster.make_plan``) with ids for the page; recomputed when decisions change.
        The page shows it and can download a plan; nothing here moves or deletes a file."""
        return self._dups_state()[1]

    def duplicates_json(self) -> bytes:
        """:meth:`duplicates` as the reply body, validated and rendered once per plan (see :meth:`clusters_json`)."""
        return self._dups_state()[2]

    def _dups_state(self) -> tuple[float, dict[str, Any], bytes]:
        from lookalike.dedupe import make_plan

        with self._dups_lock:
            stamp = self._decisions_mtime()
            if self._dups is None or self._dups[0] != stamp:
                plan = make_plan(self.index)
                for g in plan["groups"]:
                    for f in g["files"]:
                        f["id"] = self.by_name[f["path"]]
                        f["thumbnail"] = f"/api/thumbnails/{f['id']}"
                plan = reply_content(DuplicatesReply, plan)  # a plan the schema does not describe is a 500 here
                self._dups = (stamp, plan, json_body(plan))
            return self._dups

    def decide(self, kind: str, ids: list[int]) -> dict[str, Any]:
        from lookalike.dedupe import decide

        item = decide(self.index, kind, [self.paths[self.check_id(i)] for i in ids])
        return {"kind": item["kind"], "names": item["names"]}

    def plan_with(self, keepers: list[int]) -> dict[str, Any]:
        """The current plan with the keepers a person chose (ids), as a file to hand to ``dedupe --apply``."""
        from lookalike.dedupe import make_plan

        plan = self.duplicates()
        groups = [
            {"paths": [f["path"] for f in g["files"]], "min_score": g["min_score"], "max_score": g["max_score"],
             **({"decision": "keep-all"} if g["action"] == "keep-all" else {})}
            for g in plan["groups"]
        ]  # fmt: skip
        chosen = {self.names[self.check_id(i)] for i in keepers}
        return make_plan(self.index, plan["keep"], groups=groups, keepers=chosen)

    def plan_json(self, keepers: list[int]) -> bytes:
        """:meth:`plan_with` as the file sent: checked against its reply model like every JSON reply."""
        return json_body(reply_content(Plan, self.plan_with(keepers)))

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
        metrics = raw.get("metrics") or {}
        return {
            "available": True,
            "clusters": clusters,
            "noise": ids_of(raw.get("noise", [])),
            # the figures the reply documents: a file from another version may hold others, which are not sent
            "metrics": {k: v for k, v in metrics.items() if k in ClusterMetrics.model_fields},
        }

    # --- the map -------------------------------------------------------------------------------------------------

    def _map_state(self) -> tuple[dict[str, Any], bytes]:
        """The map's description and its points as one binary block, rebuilt when the map or the clusters change.

        Binary, not JSON: at 100,000 images the points are 0.8 MB of float32 x, y plus 2 bytes per image per
        colouring, which the page wraps in typed arrays without parsing, where JSON would be several times larger
        and slow to parse.
        """
        from lookalike.explore import COLORS, color_codes, load_map

        def mtime(path: Path) -> float:
            try:
                return path.stat().st_mtime
            except OSError:
                return -1.0

        key = (mtime(self.index.folder / MAP_FILE), mtime(self.index.folder / CLUSTERS_FILE))
        with self._map_lock:
            if self._map is not None and self._map[0] == key:
                return self._map[1], self._map[2]
            found, why = load_map(self.index)
            if found is None:
                meta: dict[str, Any] = {"available": False, "reason": why, "count": len(self.names)}
                blob = b""
            else:
                raw_clusters = None
                if key[1] >= 0:
                    from lookalike.cluster import load_clusters

                    try:
                        raw_clusters = load_clusters(self.index)
                    except LookalikeError as exc:
                        log.warning("map not coloured by cluster: %s", exc)
                n = len(found.xy)
                parts = [np.ascontiguousarray(found.xy, np.float32).tobytes()]
                colorings = {}
                for color in COLORS:
                    codes, legend = color_codes(self.index, color, raw_clusters)
                    parts.append(codes.astype("<u2").tobytes())
                    colorings[color] = {"legend": legend, "kind": "ramp" if color == "time" else "categories"}
                blob = b"".join(parts)
                meta = {
                    "available": True,
                    "count": n,
                    "method": found.method,
                    "color": found.color,
                    # what the reply documents: a map file from another version may record more, which is not sent
                    "info": {k: v for k, v in found.info.items() if k in MapInfo.model_fields},
                    "colorings": colorings,
                    "suspects": found.suspects,
                    "suspects_checked": bool(found.info.get("suspects_checked")),
                    "points": {
                        "url": "/api/map/points",
                        "bytes": len(blob),
                        "layout": ["xy float32 little-endian, x0 y0 x1 y1 ...", *[f"{c} uint16" for c in COLORS]],
                        "order": list(COLORS),
                    },
                }
                try:
                    meta = reply_content(MapReply, meta)
                except ValidationError as exc:  # a header holding other than what `lookalike map` writes
                    log.warning("map not shown: %s", exc)
                    why = f"the stored map is unreadable ({exc.error_count()} wrong fields): run `lookalike map` again"
                    meta, blob = {"available": False, "reason": why, "count": len(self.names)}, b""
            self._map = (key, meta, blob)
            return meta, blob

    def map_meta(self) -> dict[str, Any]:
        return self._map_state()[0]

    def map_points(self) -> bytes:
        meta, blob = self._map_state()
        if not meta["available"]:
            raise HTTPException(404, meta["reason"])
        return blob

    def selection(self, ids: list[int]) -> list[str]:
        for i in ids:
            self.check_id(i)
        return [str(self.paths[i]) for i in ids]

    def selection_sheet(self, ids: list[int]) -> bytes:
        from lookalike.cluster import contact_sheet

        paths = [Path(p) for p in self.selection(ids)]
        with tempfile.TemporaryDirectory() as tmp:
            title = f"{len(ids)} selected images" + (" (the first 64)" if len(ids) > 64 else "")
            return contact_sheet(paths[:64], Path(tmp) / "sheet.png", title=title).read_bytes()

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "images": len(self.names),
            "model": self.model_name,
            "classes": self.classes,
            "classify": self.can_classify,
            "clusters": self.clusters()["available"],
            "map": self.map_meta()["available"],
            "modes": list(MODES),
            "max_k": MAX_K,
            "formats": sorted(IMAGE_EXTENSIONS),
        }


class ShownJSONResponse(JSONResponse):
    """JSON whose strings are valid UTF-8 whatever the file names: a name with bytes that are not UTF-8 is sent in
    its readable form (U+FFFD); clients address images by id, which is exact."""

    def render(self, content: Any) -> bytes:
        return json_body(content)


def json_body(content: Any) -> bytes:
    """``content`` as every JSON reply is sent (see :class:`ShownJSONResponse`), also for bodies rendered ahead.

    Names are almost always valid UTF-8, so the text is encoded as it is and only a reply that cannot be (a name
    with bytes that are not UTF-8) is redone through :func:`shown_json`: the same bytes as always going through it,
    without walking every string of a 100,000-id reply in Python first."""
    try:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (UnicodeEncodeError, TypeError):  # TypeError: a path object, which shown_json turns into its name
        return json.dumps(shown_json(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def reply_content(model: type[BaseModel], data: Any) -> Any:
    """``data`` checked against its reply model and made what the route sends: JSON types, and the fields the
    service left out still left out. A reply that does not fit its model raises ``ValidationError``."""
    return model.model_validate(data).model_dump(mode="json", exclude_unset=True)


def _preview_url(img: Image.Image, size: int = 256) -> str:
    """The uploaded query as a small JPEG data URL: a browser cannot show HEIC or a camera RAW itself, so the page
    shows the picture as the server decoded it (upright, as it was embedded)."""
    small = img.copy()
    small.thumbnail((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


ERROR_WHY = {
    400: "The image cannot be used (not an image, truncated, too small, too many pixels) or the request is wrong.",
    401: "This server needs its token (`Authorization: Bearer TOKEN`, or the cookie from `POST /api/login`).",
    404: "No such image id or cluster, or the image is no longer on disk.",
    405: "Method not allowed on this path (the `Allow` header lists the ones that are).",
    409: "What this index holds does not allow it (the message says what to run).",
    413: "The upload is over the server's limit.",
    422: "A field is missing, of the wrong type or out of range, or the body cannot be parsed.",
}
BODY_UNPARSABLE = "There was an error parsing the body"
"""FastAPI's 400 for a body its parser cannot read (JSON that is not UTF-8); Starlette's multipart parser raises its
own 400s (a body without its boundary). Both are answered as the 422 of any other malformed request, which every
operation with a body lists."""
WHY_SEARCH_409 = (
    "The index has no images (run `lookalike index`), or a class mode (`same-class`, `other-classes`) was asked of "
    "an index without labels (build it with `lookalike index PHOTOS --labels folders`)."
)
WHY_CLASSIFY_409 = (
    "The index cannot classify: it needs at least two labelled classes (`lookalike index PHOTOS --labels folders`)."
)
WHY_SEARCH_400 = (
    "The upload is no usable photo (not an image, truncated, too small, too many pixels), or a filter date is no "
    "calendar day, or `after` is later than `before`."
)
WHY_PLAN_400 = "Two keepers chosen in one group."
WHY_DECISION_400 = "The images have the same content (a byte copy is a copy whatever is decided)."


def errors(
    *codes: int, body: dict[str, Any] | None = None, why: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The documented answers of a route: its errors as ``ErrorBody`` (``why`` says what a status means on this
    route) and, for binary routes, its 200 media type."""
    why = why or {}
    out: dict[int | str, dict[str, Any]] = {
        c: {"model": ErrorBody, "description": why.get(c, ERROR_WHY[c])} for c in codes
    }
    if body:
        out[200] = body
    return out


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route of ``app`` answers on ``path`` (for the ``Allow`` header of a 405)."""
    methods: set[str] = set()
    scope = {"type": "http", "path": path, "method": "GET", "root_path": ""}
    for route in app.routes:
        match, _ = route.matches(scope)
        if match.name != "NONE":
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _form_fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The properties of every form body (multipart or urlencoded) in ``schema``, by body."""
    out = {}
    for ops in schema["paths"].values():
        for op in ops.values():
            for media, content in op.get("requestBody", {}).get("content", {}).items():
                if media in ("multipart/form-data", "application/x-www-form-urlencoded"):
                    ref = content["schema"]["$ref"].rsplit("/", 1)[-1]
                    out[ref] = schema["components"]["schemas"][ref]
    return out


def complete_schema(schema: dict[str, Any], classes: Sequence[str] = ()) -> None:
    """Make the generated schema say exactly what the API accepts (checked by schemathesis in the test suite).

    - A form field cannot be null (a form has no null; an absent field is the default), and a field of one type is
      that type, not a one-way ``anyOf``: the upload then reads as a file part (``contentMediaType``), which clients
      generated from the schema send with a file name as the server needs.
    - Search and classify name their query in exactly one way: the ``file`` or an ``id``.
    - The filter fields carry the pattern the server checks (:data:`FILTER_FORMS`), in the query and in the form.
    - A decision is about two or more different images.
    - An upload is at least one byte (an empty file is a 422, as any schema-invalid request).
    - A ``class`` is one of this index's classes (an enum of them, when it has labels).
    - Decisions and plans are documented as multipart forms (what the page sends; the server also reads a
      urlencoded form): a urlencoded body has no form a non-object could take that is not also a valid form, so a
      client (or a fuzzer) could not tell a malformed one from a good one.
    """
    for body in _form_fields(schema).values():
        for prop in body["properties"].values():
            if "anyOf" in prop:
                kinds = [t for t in prop.pop("anyOf") if t.get("type") != "null"]
                if len(kinds) == 1:
                    prop.update(kinds[0])
                else:
                    prop["anyOf"] = kinds
            if prop.get("default", 0) is None:
                del prop["default"]
    for path in ("/api/search", "/api/classify"):
        post = schema["paths"][path]["post"]
        body = post["requestBody"]["content"]["multipart/form-data"]["schema"]
        ref = body["$ref"].rsplit("/", 1)[-1]
        # exactly one of the two ways to name the query (both, or neither, is a 422)
        schema["components"]["schemas"][ref]["oneOf"] = [{"required": ["file"]}, {"required": ["id"]}]
        post["requestBody"]["required"] = True
    search_form = schema["paths"]["/api/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    form_props = schema["components"]["schemas"][search_form["$ref"].rsplit("/", 1)[-1]]["properties"]
    for name, (pattern, human) in FILTER_FORMS.items():
        form_props[name]["pattern"] = f"^{pattern}$"
        form_props[name]["description"] += f" Written as {human}; blank = unset."
        for param in schema["paths"]["/api/search"]["get"]["parameters"]:
            if param["name"] == name:
                param["schema"] = {"type": "string", "pattern": f"^{pattern}$", "title": param["schema"].get("title")}
                param["description"] = param.get("description", "") + f" Written as {human}; blank = unset."
    decisions = schema["paths"]["/api/duplicates/decisions"]["post"]["requestBody"]["content"]
    ref = decisions["application/x-www-form-urlencoded"]["schema"]["$ref"].rsplit("/", 1)[-1]
    schema["components"]["schemas"][ref]["properties"]["ids"]["uniqueItems"] = True
    for path in ("/api/duplicates/decisions", "/api/duplicates/plan"):
        content = schema["paths"][path]["post"]["requestBody"]["content"]
        content["multipart/form-data"] = content.pop("application/x-www-form-urlencoded")
    plan = schema["paths"]["/api/duplicates/plan"]["post"]["requestBody"]["content"]["multipart/form-data"]
    keepers = schema["components"]["schemas"][plan["schema"]["$ref"].rsplit("/", 1)[-1]]["properties"]["keepers"]
    # in a form one id and a list of one are the same bytes: say both, so neither reads as the wrong type
    keepers["anyOf"] = [{"type": "integer"}, {"type": "array", "items": keepers.pop("items")}]
    keepers.pop("type")
    for path in ("/api/search", "/api/classify"):
        form = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        props = schema["components"]["schemas"][form["$ref"].rsplit("/", 1)[-1]]["properties"]
        props["file"]["minLength"] = 1
        if "class" in props and classes:
            props["class"]["enum"] = list(classes)
    if classes:
        for param in schema["paths"]["/api/search"]["get"]["parameters"]:
            if param["name"] == "class":
                param["schema"] = {"type": "string", "enum": list(classes), "title": "Class"}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return ShownJSONResponse({"error": message}, status_code=status, headers=headers)


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
    token: str | None = None,
    cors_origins: Sequence[str] = (),
) -> FastAPI:
    """The FastAPI app over one index (opened and its model loaded here, once).

    ``token``: when given, every API call, the schema and the docs need it (see :class:`Guard`). ``cors_origins``:
    other origins whose pages may call the API from a browser; none by default, so only this server's page can.
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
        docs_url=None,  # served below from the installed fastapi-offline's Swagger UI, not a CDN
        redoc_url=None,
    )
    app.state.service = svc
    app.state.token_required = token is not None
    app.add_middleware(BodyLimit, max_bytes=max_bytes + MULTIPART_SLACK, message=too_large)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(Guard, token=token)  # outermost: headers on every answer, the 401 before any work

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 400:  # only the body parsers raise a 400 HTTPException (ours are LookalikeErrors)
            kind = request.headers.get("content-type", "").partition(";")[0] or "no content type"
            detail = "" if exc.detail == BODY_UNPARSABLE else f": {str(exc.detail).rstrip('.')}"
            return _error(422, f"the request body cannot be parsed as {kind}{detail}")
        if exc.status_code == 405:  # Starlette names the methods of the first route on the path; say all of them
            headers["Allow"] = ", ".join(allowed_methods(app, request.url.path))
        return _error(exc.status_code, str(exc.detail), headers or None)

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

    guarded = (401,) if token else ()

    async def read_upload(file: UploadFile) -> bytes:
        data = await file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, too_large)
        if not data:  # the schema says a file is at least one byte
            raise HTTPException(422, "file: empty file (0 bytes)")
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
        file: UploadFile | None,
        image_id: int | None,
        k: int,
        mode: str,
        label: str | None,
        where: SearchFilter,
        rerank: int = 0,
        collapse: bool = False,
    ) -> dict:
        started = time.perf_counter()
        if not svc.names:
            raise HTTPException(409, svc.why_empty())
        if mode != "all" and not svc.classes:
            raise HTTPException(
                409,
                f"this index has no labels, so mode {mode} cannot be used; build it with "
                "`lookalike index PHOTOS --labels folders` to search by class",
            )
        if label is not None and svc.classes and label not in svc.classes:
            raise HTTPException(422, f"class: unknown class {label!r}; the index has: {', '.join(svc.classes)}")
        vec, exclude, query, data = await make_query(file, image_id)
        out = await svc.run(svc.search, vec, exclude, query, k, mode, label, where, rerank, data, collapse)
        out["seconds"] = round(time.perf_counter() - started, 4)  # decode, model, search, re-rank and classify
        return out

    @app.post(
        "/api/search",
        summary="Look-alikes of an uploaded image (or of an indexed image by id)",
        response_model=SearchReply,
        response_model_exclude_unset=True,
        responses=errors(*guarded, 400, 404, 409, 413, 422, why={400: WHY_SEARCH_400, 409: WHY_SEARCH_409}),
    )
    async def search_post(
        file: FileField = None,
        image_id: IdField = None,
        k: KField = 5,
        mode: ModeField = "all",
        label: ClassField = None,
        after: AfterField = None,
        before: BeforeField = None,
        near: NearField = None,
        path: PathField = None,
        with_label: LabelField = None,
        min_score: MinScoreField = None,
        rerank: RerankField = 0,
        collapse: CollapseField = False,
    ) -> dict[str, Any]:
        check_filter_forms({"after": after, "before": before, "near": near, "min_score": min_score})
        where = SearchFilter.parse(
            after=after, before=before, near=near, path=path, label=with_label, min_score=min_score
        )
        return await do_search(file, image_id, k, mode, label, where, rerank, collapse)

    @app.get(
        "/api/search",
        summary="Look-alikes of an indexed image, by id",
        response_model=SearchReply,
        response_model_exclude_unset=True,
        responses=errors(*guarded, 400, 404, 409, 422, why={400: WHY_SEARCH_400, 409: WHY_SEARCH_409}),
    )
    async def search_get(
        image_id: Annotated[int, Query(alias="id")],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 5,
        mode: Annotated[Mode, Query()] = "all",
        label: Annotated[str | None, Query(alias="class")] = None,
        after: Annotated[str | None, Query(description="Filter: taken on or after this date.")] = None,
        before: Annotated[str | None, Query(description="Filter: taken on or before this date.")] = None,
        near: Annotated[str | None, Query(description="Filter: lat,lon,km (EXIF GPS).")] = None,
        path: Annotated[str | None, Query(description="Filter: relative path glob.")] = None,
        with_label: Annotated[str | None, Query(alias="label", description="Filter: this label only.")] = None,
        min_score: Annotated[str | None, Query(description="Filter: lowest cosine returned.")] = None,
        rerank: Annotated[int, Query(ge=0, le=MAX_RERANK)] = 0,
        collapse: Annotated[
            bool, Query(description="One match per copy group (its keeper), copies in folded.")
        ] = False,
    ) -> dict[str, Any]:
        check_filter_forms({"after": after, "before": before, "near": near, "min_score": min_score})
        where = SearchFilter.parse(
            after=after, before=before, near=near, path=path, label=with_label, min_score=min_score
        )
        return await do_search(None, image_id, k, mode, label, where, rerank, collapse)

    @app.get(
        "/api/matches",
        summary="Matched keypoints of two indexed images and their geometric verdict",
        response_model=MatchesReply,
        response_model_exclude_unset=True,
        responses=errors(*guarded, 404, 422),
    )
    async def matches(
        a: Annotated[int, Query(description="id of the first image")],
        b: Annotated[int, Query(description="id of the second image")],
    ) -> dict[str, Any]:
        """``matches`` rows are (xa, ya, xb, yb, inlier) in each image's own pixels."""
        return await svc.run(svc.match_pair, a, b)

    @app.get(
        "/api/matches.png",
        summary="The two images side by side with their matched keypoints drawn",
        response_class=Response,  # binary: no JSON 200 in the schema
        responses=errors(*guarded, 404, 422, body={"description": "PNG", "content": {"image/png": {}}}),
    )
    async def matches_png(a: Annotated[int, Query()], b: Annotated[int, Query()]) -> Response:
        png = await svc.run(svc.match_png, a, b)
        return Response(png, media_type="image/png")

    @app.post(
        "/api/classify",
        summary="Room type of an uploaded image (or an indexed one by id), with probabilities",
        response_model=ClassifyReply,
        response_model_exclude_unset=True,
        responses=errors(*guarded, 400, 404, 409, 413, 422, why={400: WHY_SEARCH_400, 409: WHY_CLASSIFY_409}),
    )
    async def classify(file: FileField = None, image_id: IdField = None) -> dict[str, Any]:
        if not svc.can_classify:
            raise HTTPException(409, svc.why_no_classifier())
        vec, exclude, query, _ = await make_query(file, image_id)
        prediction = await svc.run(svc.predict, vec, exclude)
        return {"query": query, **(prediction or {})}

    @app.get(
        "/api/images/{image_id}",
        summary="The original file of an indexed image",
        response_class=FileResponse,
        responses=errors(*guarded, 404, 422, body={"description": "The file as indexed.", "content": IMAGE_TYPES}),
    )
    async def image(image_id: int) -> FileResponse:
        path = svc.paths[svc.check_id(image_id)]
        if not path.is_file():
            raise HTTPException(404, f"image {image_id} ({svc.names[image_id]}) is no longer on disk")
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "public, max-age=3600"})

    @app.get(
        "/api/thumbnails/{image_id}",
        summary="A JPEG thumbnail (256 px) of an indexed image, cached",
        response_class=Response,
        responses=errors(*guarded, 404, 422, body={"description": "JPEG", "content": {"image/jpeg": {}}}),
    )
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

    @app.get(
        "/api/clusters",
        summary="The index's clusters (from `lookalike cluster`), as image ids",
        response_model=ClustersReply,
        response_model_exclude_unset=True,
        responses=errors(*guarded),
    )
    async def clusters() -> Response:
        """The body is checked against ``ClustersReply`` and rendered once per clustering (see Service.clusters_json)."""
        return Response(await anyio.to_thread.run_sync(svc.clusters_json), media_type="application/json")

    @app.get(
        "/api/clusters/{cluster_id}/sheet.png",
        summary="A contact sheet (PNG) of one cluster's images",
        response_class=Response,
        responses=errors(*guarded, 404, 422, body={"description": "PNG", "content": {"image/png": {}}}),
    )
    async def cluster_sheet(cluster_id: int) -> Response:
        png = await svc.run(svc.cluster_sheet, cluster_id)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.get(
        "/api/duplicates",
        summary="Copy groups with the suggested keeper and why (a dry run: nothing moves)",
        response_model=DuplicatesReply,
        response_model_exclude_unset=True,
        responses=errors(*guarded),
    )
    async def duplicates() -> Response:
        """The body is checked against ``DuplicatesReply`` and rendered once per plan (see Service.duplicates_json)."""
        return Response(await svc.run(svc.duplicates_json), media_type="application/json")

    @app.post(
        "/api/duplicates/decisions",
        summary="Remember that images (ids) are not duplicates, or to keep them all",
        response_model=DecisionReply,
        response_model_exclude_unset=True,
        responses=errors(*guarded, 400, 404, 422, why={400: WHY_DECISION_400}),
    )
    async def decision(
        kind: Annotated[DecisionKind, Form()],
        ids: Annotated[
            list[int],
            Form(min_length=2, description="Ids of the images the decision is about (two or more, each once)."),
        ],
    ) -> dict[str, Any]:
        if len(set(ids)) != len(ids):
            raise HTTPException(422, "ids: each image once")
        return await svc.run(svc.decide, kind, ids)

    @app.post(
        "/api/duplicates/plan",
        summary="A plan file for `lookalike dedupe --apply`, with the keepers chosen",
        response_model=Plan,
        response_model_exclude_unset=True,
        responses={
            **errors(*guarded, 400, 404, 422, why={400: WHY_PLAN_400}),
            200: {
                "description": "The plan, as a file to save (dedupe-plan.json).",
                "headers": {
                    "Content-Disposition": {
                        "description": 'attachment; filename="dedupe-plan.json"',
                        "schema": {"type": "string"},
                    }
                },
            },
        },
    )
    async def plan(
        keepers: Annotated[list[int] | None, Form(description="Ids chosen as keepers (one per group at most).")] = None,
    ) -> Response:
        """A download, so a Response with its header; the body is checked against ``Plan`` first all the same."""
        return Response(
            await svc.run(svc.plan_json, keepers or []),
            media_type="application/json",
            headers={"Content-Disposition": 'attachment; filename="dedupe-plan.json"'},
        )

    @app.get(
        "/api/map",
        summary="The stored map of the collection (from `lookalike map`): method, colourings, legend",
        response_model=MapReply | NoMapReply,
        response_model_exclude_unset=True,
        responses=errors(*guarded),
    )
    async def map_meta() -> dict[str, Any]:
        return await anyio.to_thread.run_sync(svc.map_meta)

    @app.get(
        "/api/map/points",
        summary="The map's points: float32 x,y per image, then uint16 colour codes per colouring",
        response_class=Response,  # binary: no JSON 200 in the schema
        responses=errors(*guarded, 404, body={"description": "binary", "content": {"application/octet-stream": {}}}),
    )
    async def map_points() -> Response:
        blob = await anyio.to_thread.run_sync(svc.map_points)
        return Response(blob, media_type="application/octet-stream", headers={"Cache-Control": "no-cache"})

    @app.post(
        "/api/map/selection",
        summary="The file paths of a set of image ids (a selection on the map)",
        response_model=SelectionReply,
        response_model_exclude_unset=True,
        responses=errors(*guarded, 404, 422),
    )
    async def map_selection(body: Selection) -> dict[str, Any]:
        return {"ids": body.ids, "paths": svc.selection(body.ids)}

    @app.post(
        "/api/map/sheet.png",
        summary="A contact sheet (PNG) of selected images (the first 64)",
        response_class=Response,  # binary: no JSON 200 in the schema
        responses=errors(*guarded, 404, 422, body={"description": "PNG", "content": {"image/png": {}}}),
    )
    async def map_sheet(body: Selection) -> Response:
        png = await svc.run(svc.selection_sheet, body.ids)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get(
        "/api/health",
        summary="Liveness, and what this index offers (classes, classifier, clusters)",
        response_model=HealthReply,
        response_model_exclude_unset=True,
        responses=errors(*guarded),
    )
    async def health() -> dict[str, Any]:
        return await anyio.to_thread.run_sync(svc.health)

    @app.post(
        "/api/login",
        summary="Trade the server's token for an HttpOnly cookie, so the page and its images need no header",
        status_code=204,
        response_class=Response,
        responses=errors(401, 422) if token else errors(422),
    )
    async def login(request: Request, token_field: Annotated[str, Form(alias="token", min_length=1)]) -> Response:
        if token is None:
            return Response(status_code=204)  # an open server: nothing to log in to
        if not hmac.compare_digest(token_field.strip().encode(), token.encode()):
            raise HTTPException(401, "wrong token", headers={"WWW-Authenticate": 'Bearer realm="lookalike"'})
        response = Response(status_code=204)
        response.set_cookie(
            TOKEN_COOKIE,
            token,
            httponly=True,  # page scripts never see it
            samesite="strict",  # other sites' pages cannot make the browser send it
            secure=request.url.scheme == "https",
            max_age=30 * 86400,
        )
        return response

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(DOCS_PAGE, headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=swagger_assets()), name="docs-assets")
    schema = app.openapi()  # generated once here and completed with what FastAPI cannot infer
    complete_schema(schema, svc.classes)
    if token:
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "The server's token (serve --token)."},
            "cookie": {"type": "apiKey", "in": "cookie", "name": TOKEN_COOKIE},
        }
        for path, ops in schema["paths"].items():
            if path != "/api/login":
                for op in ops.values():
                    op["security"] = [{"bearer": []}, {"cookie": []}]
    return app


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
