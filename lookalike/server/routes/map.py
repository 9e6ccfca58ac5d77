"""The stored map of the collection (from ``lookalike map``): its description, its points, and selections on it."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, StrictInt
from pydantic import Field as PydanticField

from lookalike.server.replies import MapReply, NoMapReply, SelectionReply
from lookalike.server.routes import ServiceDep
from lookalike.server.schema import errors

router = APIRouter()


class Selection(BaseModel):
    """Image ids chosen on the map: JSON integers only (``true`` is no id 1, ``"3"`` no id 3)."""

    model_config = {"extra": "forbid"}

    ids: list[StrictInt] = PydanticField(min_length=1, max_length=1_000_000)


@router.get(
    "/api/map",
    summary="The stored map of the collection (from `lookalike map`): method, colourings, legend",
    response_model=MapReply | NoMapReply,
    response_model_exclude_unset=True,
    responses=errors(),
)
async def map_meta(svc: ServiceDep) -> dict[str, Any]:
    return await anyio.to_thread.run_sync(svc.map_meta)


@router.get(
    "/api/map/points",
    summary="The map's points: float32 x,y per image, then uint16 colour codes per colouring",
    response_class=Response,  # binary: no JSON 200 in the schema
    responses=errors(404, body={"description": "binary", "content": {"application/octet-stream": {}}}),
)
async def map_points(svc: ServiceDep) -> Response:
    blob = await anyio.to_thread.run_sync(svc.map_points)
    return Response(blob, media_type="application/octet-stream", headers={"Cache-Control": "no-cache"})


@router.post(
    "/api/map/selection",
    summary="The file paths of a set of image ids (a selection on the map)",
    response_model=SelectionReply,
    response_model_exclude_unset=True,
    responses=errors(404, 422),
)
async def map_selection(svc: ServiceDep, body: Selection) -> dict[str, Any]:
    return {"ids": body.ids, "paths": svc.selection(body.ids)}


@router.post(
    "/api/map/sheet.png",
    summary="A contact sheet (PNG) of selected images (the first 64)",
    response_class=Response,  # binary: no JSON 200 in the schema
    responses=errors(404, 422, body={"description": "PNG", "content": {"image/png": {}}}),
)
async def map_sheet(svc: ServiceDep, body: Selection) -> Response:
    png = await svc.run(svc.selection_sheet, body.ids)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
