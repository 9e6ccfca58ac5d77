"""Search, classify and keypoint matches: a query (an upload or an indexed id) through the one query path."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import Response

from lookalike.filters import FILTER_FIELDS, SearchFilter
from lookalike.query import PreparedQuery
from lookalike.server.replies import ClassifyReply, MatchesReply, Mode, SearchReply
from lookalike.server.routes import ServiceDep
from lookalike.server.schema import WHY_CLASSIFY_409, WHY_SEARCH_400, WHY_SEARCH_409, errors
from lookalike.server.service import MAX_K, MAX_RERANK, Service

router = APIRouter()

# Form fields, at module level so FastAPI can resolve them (annotations are strings under `from __future__`).
KField = Annotated[int, Form(ge=1, le=MAX_K, description="How many matches.")]
ModeField = Annotated[Mode, Form(description="all, same-class (the query's class) or other-classes.")]
FileField = Annotated[UploadFile | None, File(description="The query image (JPEG, PNG, WebP, ...).")]
IdField = Annotated[int | None, Form(alias="id", description="Or: the id of an indexed image to search from.")]
ClassField = Annotated[str | None, Form(alias="class", description="The query's class, for class modes.")]
RERANK_HELP = (
    "Re-rank the top this many by geometric verification (local features); 0 = off. Each match then carries its "
    "inlier count."
)
RerankField = Annotated[int, Form(ge=0, le=MAX_RERANK, description=RERANK_HELP)]
CollapseField = Annotated[
    bool, Form(description="One match per copy group (its keeper); the ids of the copies folded are in `folded`.")
]


def filter_params(kind: Callable[..., Any]) -> Callable[..., SearchFilter]:
    """A dependency taking the search filter's fields (:data:`lookalike.filters.FILTER_FIELDS`) as form fields or
    query parameters (``kind``: ``fastapi.Form`` or ``fastapi.Query``), read by :meth:`SearchFilter.from_text` (their written forms, then the parser): one
    declaration for the CLI, the form and the query, and one grammar."""

    def where(**values: str | None) -> SearchFilter:
        return SearchFilter.from_text(**values)

    params = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                str | None, kind(description=f"Filter: {f.help[:1].lower()}{f.help[1:]} Example: {f.example}.")
            ],
        )
        for f in FILTER_FIELDS
    ]
    where.__signature__ = inspect.Signature(params, return_annotation=SearchFilter)  # type: ignore[attr-defined]
    return where


FormFilter = Annotated[SearchFilter, Depends(filter_params(Form))]
QueryFilter = Annotated[SearchFilter, Depends(filter_params(Query))]


async def read_upload(request: Request, file: UploadFile) -> bytes:
    """The upload's bytes: over the limit is a 413, none a 422 (the schema says a file is at least one byte)."""
    limit, too_large = request.app.state.upload_limit
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, too_large)
    if not data:
        raise HTTPException(422, "file: empty file (0 bytes)")
    return data


async def make_query(
    request: Request, svc: Service, file: UploadFile | None, image_id: int | None
) -> tuple[PreparedQuery, dict[str, Any], bytes | None]:
    """The query (:mod:`lookalike.query`), what the reply says of it, and an upload's bytes."""
    if (file is None) == (image_id is None):
        raise HTTPException(422, "send either an image as the multipart field 'file' or the 'id' of an indexed image")
    if image_id is not None:
        return (*svc.id_query(svc.check_id(image_id)), None)
    assert file is not None
    data = await read_upload(request, file)
    name = Path(file.filename or "upload").name or "upload"
    return (*await svc.run(svc.upload_query, data, name), data)


async def do_search(
    request: Request,
    svc: Service,
    file: UploadFile | None,
    image_id: int | None,
    k: int,
    mode: str,
    label: str | None,
    where: SearchFilter,
    rerank: int = 0,
    collapse: bool = False,
) -> dict[str, Any]:
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
    q, query, data = await make_query(request, svc, file, image_id)
    out = await svc.run(svc.search, q, query, k, mode, label, where, rerank, data, collapse)
    out["seconds"] = round(time.perf_counter() - started, 4)  # decode, model, search, re-rank and classify
    return out


@router.post(
    "/api/search",
    summary="Look-alikes of an uploaded image (or of an indexed image by id)",
    response_model=SearchReply,
    response_model_exclude_unset=True,
    responses=errors(400, 404, 409, 413, 422, why={400: WHY_SEARCH_400, 409: WHY_SEARCH_409}),
)
async def search_post(
    request: Request,
    svc: ServiceDep,
    where: FormFilter,
    file: FileField = None,
    image_id: IdField = None,
    k: KField = 5,
    mode: ModeField = "all",
    class_: ClassField = None,
    rerank: RerankField = 0,
    collapse: CollapseField = False,
) -> dict[str, Any]:
    return await do_search(request, svc, file, image_id, k, mode, class_, where, rerank, collapse)


@router.get(
    "/api/search",
    summary="Look-alikes of an indexed image, by id",
    response_model=SearchReply,
    response_model_exclude_unset=True,
    responses=errors(400, 404, 409, 422, why={400: WHY_SEARCH_400, 409: WHY_SEARCH_409}),
)
async def search_get(
    request: Request,
    svc: ServiceDep,
    where: QueryFilter,
    image_id: Annotated[int, Query(alias="id")],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 5,
    mode: Annotated[Mode, Query()] = "all",
    class_: Annotated[str | None, Query(alias="class")] = None,
    rerank: Annotated[int, Query(ge=0, le=MAX_RERANK)] = 0,
    collapse: Annotated[bool, Query(description="One match per copy group (its keeper), copies in folded.")] = False,
) -> dict[str, Any]:
    return await do_search(request, svc, None, image_id, k, mode, class_, where, rerank, collapse)


@router.get(
    "/api/matches",
    summary="Matched keypoints of two indexed images and their geometric verdict",
    response_model=MatchesReply,
    response_model_exclude_unset=True,
    responses=errors(404, 422),
)
async def matches(
    svc: ServiceDep,
    a: Annotated[int, Query(description="id of the first image")],
    b: Annotated[int, Query(description="id of the second image")],
) -> dict[str, Any]:
    """``matches`` rows are (xa, ya, xb, yb, inlier) in each image's own pixels."""
    return await svc.run(svc.match_pair, a, b)


@router.get(
    "/api/matches.png",
    summary="The two images side by side with their matched keypoints drawn",
    response_class=Response,  # binary: no JSON 200 in the schema
    responses=errors(404, 422, body={"description": "PNG", "content": {"image/png": {}}}),
)
async def matches_png(svc: ServiceDep, a: Annotated[int, Query()], b: Annotated[int, Query()]) -> Response:
    png = await svc.run(svc.match_png, a, b)
    return Response(png, media_type="image/png")


@router.post(
    "/api/classify",
    summary="Room type of an uploaded image (or an indexed one by id), with probabilities",
    response_model=ClassifyReply,
    response_model_exclude_unset=True,
    responses=errors(400, 404, 409, 413, 422, why={400: WHY_SEARCH_400, 409: WHY_CLASSIFY_409}),
)
async def classify(
    request: Request, svc: ServiceDep, file: FileField = None, image_id: IdField = None
) -> dict[str, Any]:
    if not svc.can_classify:
        raise HTTPException(409, svc.why_no_classifier())
    q, query, _ = await make_query(request, svc, file, image_id)
    prediction = await svc.run(svc.predict, q)
    return {"query": query, **(prediction or {})}
