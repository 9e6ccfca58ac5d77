"""The API's reply models say what the library's typed results hold: a field added to a result (a plan, a group, a
file, a summary, a cluster) must reach its reply model, or the strict schema would refuse the reply."""

from __future__ import annotations

import dataclasses

import numpy as np

from lookalike.cluster.run import ClusterResult
from lookalike.dedupe.keep import FileFacts
from lookalike.dedupe.plan import Plan, PlanFile, PlanGroup, PlanSummary
from lookalike.server import replies


def fields_of(dc: type) -> set[str]:
    return {f.name for f in dataclasses.fields(dc)}


def test_plan_replies_have_the_fields_of_the_typed_plan() -> None:
    assert set(replies.PlanFile.model_fields) == fields_of(PlanFile)
    assert set(replies.PlanGroup.model_fields) == fields_of(PlanGroup)
    assert set(replies.PlanSummary.model_fields) == fields_of(PlanSummary)
    assert set(replies.Plan.model_fields) == fields_of(Plan) | {"lookalike_plan"}
    # the page's copy: the plan's own fields and each file's id and thumbnail
    assert set(replies.DuplicatesReply.model_fields) == set(replies.Plan.model_fields)
    assert set(replies.DuplicateFile.model_fields) == fields_of(PlanFile) | {"id", "thumbnail"}


def test_a_cluster_reply_is_a_saved_cluster_with_ids() -> None:
    result = ClusterResult(np.array([0, 0, -1]), ["a.jpg", "b.jpg", "c.jpg"], "graph")
    saved = set(result.clusters()[0])  # what clusters.json holds per cluster
    assert set(replies.Cluster.model_fields) == (saved - {"paths"}) | {"ids", "labels"}
    assert {"clusters", "noise", "metrics"} <= set(result.to_dict())
    assert set(replies.ClustersReply.model_fields) == {"available", "clusters", "noise", "metrics"}


def test_a_plan_reply_is_the_plan_as_written() -> None:
    """``Plan.to_dict`` (the file ``dedupe plan`` writes) is exactly what the plan reply validates."""
    facts = FileFacts("a.jpg", 1, 1, 3, 1.0, 1.0, None, False, False, "2024-01-01T00:00:00", format="jpeg",
                      mtime="2024-01-01T00:00:00")  # fmt: skip
    file = PlanFile("a.jpg", "keep", 3, 1, "h", facts.to_dict())  # what build_plan writes: keep.FileFacts.to_dict()
    group = PlanGroup(1, "remove-others", "a.jpg", "sharpest", 0.99, 0.99, (file,))
    plan = Plan("p", "2024", "/i", "/r", None, "best", {"threshold": 0.9, "pixel": 0.9, "k": 10}, (group,),
                PlanSummary.of((group,)))  # fmt: skip
    as_reply = replies.Plan.model_validate(plan.to_dict()).model_dump(mode="json", exclude_unset=True)
    assert as_reply == plan.to_dict()
