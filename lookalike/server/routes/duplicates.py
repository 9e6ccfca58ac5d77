"""Copies: the dry-run plan with ids, decisions a person makes on the page, and the plan file to download."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException
from fastapi.responses import Response

from lookalike.server.replies import DecisionKind, DecisionReply, DuplicatesReply, Plan
from lookalike.server.routes import ServiceDep
from lookalike.server.schema import WHY_DECISION_400, WHY_PLAN_400, errors

router = APIRouter()


@router.get(
    "/api/duplicates",
    summary="Copy groups with the suggested keeper and why (a dry run: nothing moves)",
    response_model=DuplicatesReply,
    response_model_exclude_unset=True,
    responses=errors(),
)
async def duplicates(svc: ServiceDep) -> Response:
    """The body is checked against ``DuplicatesReply`` and rendered once per plan (see Service.duplicates_json)."""
    return Response(await svc.run(svc.duplicates_json), media_type="application/json")


@router.post(
    "/api/duplicates/decisions",
    summary="Remember that images (ids) are not duplicates, or to keep them all",
    response_model=DecisionReply,
    response_model_exclude_unset=True,
    responses=errors(400, 404, 422, why={400: WHY_DECISION_400}),
)
async def decision(
    svc: ServiceDep,
    kind: Annotated[DecisionKind, Form()],
    ids: Annotated[
        list[int],
        Form(min_length=2, description="Ids of the images the decision is about (two or more, each once)."),
    ],
) -> dict[str, Any]:
    if len(set(ids)) != len(ids):
        raise HTTPException(422, "ids: each image once")
    return await svc.run(svc.decide, kind, ids)


@router.post(
    "/api/duplicates/plan",
    summary="A plan file for `lookalike dedupe --apply`, with the keepers chosen",
    response_model=Plan,
    response_model_exclude_unset=True,
    responses={
        **errors(400, 404, 422, why={400: WHY_PLAN_400}),
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
    svc: ServiceDep,
    keepers: Annotated[list[int] | None, Form(description="Ids chosen as keepers (one per group at most).")] = None,
) -> Response:
    """A download, so a Response with its header; the body is checked against ``Plan`` first all the same."""
    return Response(
        await svc.run(svc.plan_json, keepers or []),
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="dedupe-plan.json"'},
    )
