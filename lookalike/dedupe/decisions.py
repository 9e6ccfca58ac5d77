"""What a person decided about duplicates: "these are not duplicates" and "keep them all", remembered in the index
folder (``decisions.json``) so the same pair never comes back.

Decisions are keyed by content hash, not path: a photo renamed or moved keeps its hash, so a decision survives it;
a photo edited (new bytes) is a new photo and is judged afresh.

- ``not-duplicates``: no two of these photos are copies; ``dedupe`` drops every confirmed pair between them (so they
  never form a group, nor bridge two groups), and the page does not show them as a group again.
- ``keep-all``: they are copies, and all are wanted; ``dedupe`` still reports the group but a plan never removes any
  of them (its action is ``keep-all``).

``cluster`` (graph method) reads ``not-duplicates`` too: a marked pair is never a strong edge and does not set the
photos' local scale, so two frames a person called different are not joined on their own similarity as copies are;
they still share a cluster when the rest of the collection links them (a cluster groups one subject, and "two
different shots" may well be one subject). ``keep-all`` does not change clustering (copies are one subject anyway).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lookalike.errors import LookalikeError
from lookalike.images import content_hash
from lookalike.io import atomic_write_json, now_iso
from lookalike.store import DECISIONS_FILE, REFERENCES_FILE

if TYPE_CHECKING:
    from lookalike.view import IndexView

DECISION_KINDS = ("not-duplicates", "keep-all")


@dataclass
class Decisions:
    """All decisions of one index folder; ``sets`` pairs each kind with the hash sets it was given for."""

    path: Path
    items: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, index_dir: str | Path) -> Decisions:
        import json

        path = Path(index_dir) / DECISIONS_FILE
        if not path.is_file():
            return cls(path)
        try:
            data = json.loads(path.read_text())
            items = [d for d in data.get("decisions", []) if d.get("kind") in DECISION_KINDS and d.get("hashes")]
        except (OSError, ValueError, AttributeError) as exc:
            raise LookalikeError(f"{path}: unreadable decisions file ({exc}); move it away to start afresh") from None
        return cls(path, items)

    def save(self) -> None:
        atomic_write_json(self.path, {"decisions": self.items})

    def add(self, kind: str, hashes: Sequence[str], names: Sequence[str] = ()) -> dict[str, Any]:
        """Remember one decision (saved at once; the same decision again changes nothing). ``names`` are kept only
        for people reading the file."""
        if kind not in DECISION_KINDS:
            raise LookalikeError(f"a decision is one of {', '.join(DECISION_KINDS)}, got {kind!r}")
        unique = sorted(set(hashes))
        if len(unique) < 2:
            raise LookalikeError("a decision needs at least two different photos (these have the same content)")
        same = next((d for d in self.items if d["kind"] == kind and sorted(d["hashes"]) == unique), None)
        if same is not None:  # a repeat (a re-run after a kill, a second click) is remembered once
            return same
        item = {"kind": kind, "hashes": unique, "names": list(names), "at": now_iso()}
        self.items.append(item)
        self.save()
        return item

    def _sets(self, kind: str) -> list[frozenset[str]]:
        return [frozenset(d["hashes"]) for d in self.items if d["kind"] == kind]

    def separated(self, a: str, b: str) -> bool:
        """Whether a person said the photos with these hashes are not duplicates."""
        return a != b and any(a in s and b in s for s in self._sets("not-duplicates"))

    def kept_all(self, hashes: Iterable[str]) -> bool:
        """Whether one keep-all decision covers every one of these photos."""
        group = set(hashes)
        return any(group <= s for s in self._sets("keep-all"))

    def __len__(self) -> int:
        return len(self.items)


def decide(index: IndexView, kind: str, files: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """Remember a decision about these photos (paths on disk, or names relative to the photo folder); each is
    identified by its content hash, so the decision survives renames and moves."""
    hashes, names = [], []
    for f in files:
        p = Path(f)
        candidates = [p, index.root / p] if not p.is_absolute() else [p]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise LookalikeError(f"{f}: no such photo (give a path, or a name relative to {index.root})")
        try:
            hashes.append(content_hash(found.read_bytes()))
        except OSError as exc:
            raise LookalikeError(f"{f}: cannot read ({exc.strerror or exc})") from None
        try:
            names.append(found.resolve().relative_to(index.root).as_posix())
        except ValueError:
            names.append(str(found))
    decisions = Decisions.load(index.folder)
    return decisions.add(kind, hashes, names)


def load_references(index_dir: str | Path) -> tuple[str, ...]:
    """The reference folders remembered for an index (names relative to the photo folder, "" = all of it)."""
    import json

    path = Path(index_dir) / REFERENCES_FILE
    if not path.is_file():
        return ()
    try:
        return tuple(str(r) for r in json.loads(path.read_text()).get("reference", []))
    except (OSError, ValueError, AttributeError) as exc:
        raise LookalikeError(f"{path}: unreadable reference list ({exc}); move it away to start afresh") from None


def remember_references(index_dir: str | Path, add: Sequence[str] = (), remove: Sequence[str] = ()) -> tuple[str, ...]:
    """Add and remove reference folders of an index (kept in ``references.json``); returns the list now."""
    now = tuple(r for r in dict.fromkeys([*load_references(index_dir), *add]) if r not in set(remove))
    if now != load_references(index_dir):
        atomic_write_json(Path(index_dir) / REFERENCES_FILE, {"reference": list(now), "at": now_iso()})
    return now
