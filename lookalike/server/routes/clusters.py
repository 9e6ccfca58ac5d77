"""The index's clusters (from ``lookalike cluster``) as ids, and a contact sheet per cluster."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import Response

from lookalike.server.replies import ClustersReply
from lookalike.server.routes import ServiceDep
from lookalike.server.schema import errors

router = APIRouter()


@router.get(
    "/api/clusters",
    summary="The index's clusters (from `lookalike cluster`), as image ids",
    response_model=ClustersReply,
    response_model_exclude_unset=True,
    responses=errors(),
)
async def clusters(svc: ServiceDep) -> Response:
    """The body is checked against ``ClustersReply`` and rendered once per clustering (see Service.clusters_json)."""
    return Response(await anyio.to_thread.run_sync(svc.clusters_json), media_type="application/json")


@router.get(
    "/api/clusters/{cluster_id}/sheet.png",
    summary="A contact sheet (PNG) of one cluster's images",
    response_class=Response,
    responses=errors(404, 422, body={"description": "PNG", "content": {"image/png": {}}}),
)
async def cluster_sheet(svc: ServiceDep, cluster_id: int) -> Response:
    png = await svc.run(svc.cluster_sheet, cluster_id)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})
