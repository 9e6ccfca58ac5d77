"""The dedupe plan and journal as typed records: files written before they were typed load, and write back the same
bytes; what is not a plan or a journal is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lookalike.dedupe import Journal, JournalStep, Plan, PlanSummary, load_plan, save_plan
from lookalike.errors import LookalikeError
from lookalike.io import atomic_write_json

# A plan as lookalike wrote it when plans were plain dicts (every key of format 1, a keep-all group, no notes kept).
OLD_PLAN = {
    "lookalike_plan": 1,
    "id": "5f0c3d9e0a8b4c1e9d2f7a6b5c4d3e2f",
    "created": "2026-12-01T10:11:12+00:00",
    "index": "/photos/.lookalike",
    "root": "/photos",
    "index_created": "2026-12-01T10:00:00+00:00",
    "keep": "best",
    "settings": {"threshold": 0.8, "pixel": 0.9, "k": 10},
    "groups": [
        {
            "id": 1,
            "action": "remove-others",
            "keeper": "temple.jpg",
            "why": "most pixels: 640×480 vs 320×240",
            "min_score": 0.9123,
            "max_score": 0.9871,
            "files": [
                {"path": "temple.jpg", "role": "keep", "size": 81234, "mtime_ns": 1764583200000000000,
                 "hash": "ab12", "facts": {"width": 640, "height": 480, "sharpness": 812.5, "exif": 2}},
                {"path": "copies/temple_small.jpg", "role": "remove", "size": 20111, "mtime_ns": 1764583201000000000,
                 "hash": "cd34", "facts": {"width": 320, "height": 240, "sharpness": 240.0, "exif": 0}},
            ],
        },
        {
            "id": 2,
            "action": "keep-all",
            "keeper": "flower.jpg",
            "why": "sharpest: 500 vs 300",
            "min_score": 0.95,
            "max_score": 0.95,
            "files": [
                {"path": "flower.jpg", "role": "keep", "size": 5000, "mtime_ns": 1, "hash": "ef56", "facts": {}},
                {"path": "flower2.jpg", "role": "keep", "size": 4000, "mtime_ns": 2, "hash": "0789", "facts": {}},
            ],
        },
    ],
    "summary": {"groups": 2, "kept_all": 1, "remove": 1, "bytes": 20111},
    "notes": ["2 of 5 candidate pairs (cosine ≥ 0.8) line up pixel for pixel"],
}  # fmt: skip

OLD_JOURNAL = {
    "plan": "5f0c3d9e0a8b4c1e9d2f7a6b5c4d3e2f",
    "mode": "link",
    "target": "/trash",
    "state": "applying",
    "started": "2026-12-01T10:12:00+00:00",
    "steps": [
        {"path": "copies/temple_small.jpg", "keeper": "temple.jpg", "hash": "cd34", "size": 20111, "state": "done",
         "dest": "/trash/copies/temple_small.jpg", "link": "hardlink"},
        {"path": "b.jpg", "keeper": "a.jpg", "hash": "99", "size": 7, "state": "started", "dest": "/trash/b.jpg"},
        {"path": "c.jpg", "keeper": "a.jpg", "hash": "98", "size": 8, "state": "todo"},
    ],
    "updated": "2026-12-01T10:12:01+00:00",
}  # fmt: skip


def _written(obj: dict, path: Path) -> bytes:
    atomic_write_json(path, obj)
    return path.read_bytes()


def test_an_old_plan_file_loads_typed_and_writes_back_the_same_bytes(tmp_path: Path) -> None:
    old = _written(OLD_PLAN, tmp_path / "old.json")
    plan = load_plan(tmp_path / "old.json")
    assert isinstance(plan, Plan) and plan.id == OLD_PLAN["id"] and plan.summary == PlanSummary(2, 1, 1, 20111)
    first = plan.groups[0]
    assert first.keeper == "temple.jpg" and [f.path for f in first.removed] == ["copies/temple_small.jpg"]
    assert plan.groups[1].removed == ()  # a keep-all group acts on nothing
    save_plan(plan, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == old
    assert Plan.from_dict(plan.to_dict()) == plan


def test_an_edited_plan_loads_and_its_summary_follows_the_groups_when_it_has_none() -> None:
    edited = {**OLD_PLAN, "groups": OLD_PLAN["groups"][:1]}
    del edited["summary"]
    assert load_plan(edited).summary == PlanSummary(1, 0, 1, 20111)


def test_an_old_journal_loads_typed_and_writes_back_the_same_bytes(tmp_path: Path) -> None:
    old = _written(OLD_JOURNAL, tmp_path / "old.json")
    journal = Journal.from_dict(json.loads(old))
    assert journal.steps[0] == JournalStep(
        "copies/temple_small.jpg", "temple.jpg", "cd34", 20111, "done", "/trash/copies/temple_small.jpg", "hardlink"
    )
    assert journal.steps[2].dest is None and journal.count("todo") == 1
    assert _written(journal.to_dict(), tmp_path / "again.json") == old


def test_a_journal_step_changes_into_a_new_journal() -> None:
    journal = Journal.from_dict(OLD_JOURNAL)
    after = journal.with_step(1, state="done", link="symlink")
    assert journal.steps[1].state == "started" and after.steps[1].state == "done" and after.count("done") == 2
    assert after.to_dict()["steps"][1]["link"] == "symlink" and "link" not in journal.to_dict()["steps"][1]
    with pytest.raises(AttributeError):
        after.state = "applied"  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    "data",
    [[], {"id": "x"}, {**OLD_PLAN, "lookalike_plan": 2}, {**OLD_PLAN, "groups": [{"id": 1, "files": []}]},
     {**OLD_PLAN, "groups": [{**OLD_PLAN["groups"][0], "files": [{"path": "a.jpg"}]}]}],
)  # fmt: skip
def test_what_is_not_a_plan_is_refused_in_one_line(tmp_path: Path, data: object) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LookalikeError, match="not a lookalike dedupe plan") as info:
        load_plan(path)
    assert "\n" not in str(info.value)
