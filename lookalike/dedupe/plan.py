"""The dedupe plan and journal as typed, frozen records, with the JSON they are stored as.

A **plan** (``dedupe plan``) says, for each group of copies, which file stays and why, what happens to the others,
and what each file looked like when the plan was made (size, mtime, content hash). A **journal**
(``INDEX_DIR/journals/<plan id>.json``) lists the steps of applying one plan and the state of each; it is rewritten
after every step, each time as a new record (``with_step``), never changed in place.

``to_dict`` gives exactly the JSON object of the files lookalike has always written (written with sorted keys, so
files round-trip byte for byte: ``from_dict`` then ``to_dict`` of an old file writes the same bytes). A plan a person
edited (a group dropped, roles swapped) loads as long as the fields ``apply`` needs are there; anything else is
refused in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from lookalike.errors import LookalikeError

PLAN_FORMAT = 1
STEP_STATES = ("todo", "started", "done", "undone", "lost")
JOURNAL_STATES = ("applying", "applied", "undoing", "undone")


@dataclass(frozen=True)
class PlanFile:
    """One file of a group: ``role`` keep or remove, and what it was when the plan was made."""

    path: str
    role: str
    size: int
    mtime_ns: int
    hash: str
    facts: Mapping[str, Any] = field(default_factory=dict)  # keep.FileFacts.to_dict(): pixels, sharpness, EXIF

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "role": self.role, "size": self.size, "mtime_ns": self.mtime_ns,
                "hash": self.hash, "facts": dict(self.facts)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PlanFile:
        return cls(d["path"], d["role"], d["size"], d["mtime_ns"], d["hash"], d.get("facts", {}))


@dataclass(frozen=True)
class PlanGroup:
    """A group of copies: ``action`` remove-others, keep-all (decided by a person) or reference-only (every file
    under a reference folder: reported, never acted on); the keeper first."""

    id: int
    action: str
    keeper: str
    why: str
    min_score: float
    max_score: float
    files: tuple[PlanFile, ...]

    @property
    def removed(self) -> tuple[PlanFile, ...]:
        """The files applying the plan acts on (none in a keep-all group)."""
        return tuple(f for f in self.files if f.role == "remove") if self.action == "remove-others" else ()

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "keeper": self.keeper, "why": self.why,
                "min_score": self.min_score, "max_score": self.max_score,
                "files": [f.to_dict() for f in self.files]}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PlanGroup:
        return cls(d.get("id", 0), d.get("action", ""), d["keeper"], d.get("why", ""), d.get("min_score", 0.0),
                   d.get("max_score", 0.0), tuple(PlanFile.from_dict(f) for f in d["files"]))  # fmt: skip


@dataclass(frozen=True)
class PlanSummary:
    groups: int
    kept_all: int
    remove: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"groups": self.groups, "kept_all": self.kept_all, "remove": self.remove, "bytes": self.bytes}

    @classmethod
    def of(cls, groups: tuple[PlanGroup, ...]) -> PlanSummary:
        removed = [f for g in groups for f in g.files if f.role == "remove"]
        kept_all = sum(g.action == "keep-all" for g in groups)
        return cls(len(groups), kept_all, len(removed), int(sum(f.size for f in removed)))


@dataclass(frozen=True)
class Plan:
    """A dry run: which copy of each group stays and why. ``index``/``root``/``index_created`` tie it to one build
    of one index; ``settings`` are the threshold, pixel and k it was found with."""

    id: str
    created: str
    index: str
    root: str
    index_created: str | None
    keep: str
    settings: Mapping[str, Any]
    groups: tuple[PlanGroup, ...]
    summary: PlanSummary
    notes: tuple[str, ...] = ()
    reference: tuple[str, ...] = ()  # reference folders (relative to root, "" = all): nothing under them is removed

    def to_dict(self) -> dict[str, Any]:
        d = {
            "lookalike_plan": PLAN_FORMAT, "id": self.id, "created": self.created, "index": self.index,
            "root": self.root, "index_created": self.index_created, "keep": self.keep,
            "settings": dict(self.settings), "groups": [g.to_dict() for g in self.groups],
            "summary": self.summary.to_dict(), "notes": list(self.notes),
        }  # fmt: skip
        if self.reference:  # written only when set: plans without reference folders keep their bytes
            d["reference"] = list(self.reference)
        return d

    def _repr_html_(self) -> str:
        """A notebook shows the plan group by group, keeper first (``lookalike.display``)."""
        from lookalike.display import plan_html

        return plan_html(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, source: object = "plan") -> Plan:
        """A plan from its JSON object; anything that is not one is refused in one line naming ``source``."""
        if not isinstance(d, Mapping) or d.get("lookalike_plan") != PLAN_FORMAT or "id" not in d:
            raise LookalikeError(f"{source}: not a lookalike dedupe plan")
        try:
            groups = tuple(PlanGroup.from_dict(g) for g in d.get("groups", []))
            summary = d.get("summary")
            return cls(
                d["id"], d.get("created", ""), d.get("index", ""), d.get("root", ""), d.get("index_created"),
                d.get("keep", ""), d.get("settings", {}), groups,
                PlanSummary(**summary) if isinstance(summary, Mapping) else PlanSummary.of(groups),
                tuple(d.get("notes", ())), tuple(str(r) for r in d.get("reference", ())),
            )  # fmt: skip
        except (KeyError, TypeError, AttributeError) as exc:
            raise LookalikeError(f"{source}: not a lookalike dedupe plan (a group or file lacks {exc})") from None


@dataclass(frozen=True)
class JournalStep:
    """One file to act on: its path, keeper, hash and size from the plan, ``dest`` where it goes (move, or link with
    a folder for the originals), ``state`` (todo → started → done; undone or lost after an undo) and ``link``
    (hardlink or symlink) once it was replaced by one."""

    path: str
    keeper: str
    hash: str
    size: int
    state: str = "todo"
    dest: str | None = None
    link: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"path": self.path, "keeper": self.keeper, "hash": self.hash, "size": self.size, "state": self.state}
        if self.dest is not None:
            d["dest"] = self.dest
        if self.link is not None:
            d["link"] = self.link
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JournalStep:
        return cls(d["path"], d["keeper"], d["hash"], d["size"], d["state"], d.get("dest"), d.get("link"))


@dataclass(frozen=True)
class Journal:
    """Applying one plan: ``mode`` (move, link, delete), ``target`` folder, ``state`` (applying → applied; undoing →
    undone) and every step, listed before the first one runs."""

    plan: str
    mode: str
    target: str | None
    state: str
    started: str
    steps: tuple[JournalStep, ...]
    updated: str | None = None

    def with_step(self, n: int, **changes: Any) -> Journal:
        """This journal with step ``n`` changed (``state=``, ``link=``)."""
        steps = list(self.steps)
        steps[n] = replace(steps[n], **changes)
        return replace(self, steps=tuple(steps))

    def count(self, state: str) -> int:
        return sum(s.state == state for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        d = {"plan": self.plan, "mode": self.mode, "target": self.target, "state": self.state,
             "started": self.started, "steps": [s.to_dict() for s in self.steps]}  # fmt: skip
        if self.updated is not None:
            d["updated"] = self.updated
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Journal:
        steps = tuple(JournalStep.from_dict(s) for s in d["steps"])
        return cls(d["plan"], d["mode"], d.get("target"), d["state"], d.get("started", ""), steps, d.get("updated"))
