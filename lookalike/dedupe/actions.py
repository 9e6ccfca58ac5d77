"""Acting on duplicates without losing a photo: a plan (dry run), applying it with a journal, resuming, undoing.

A **plan** is a JSON file: for each group of copies, the keeper (chosen by ``lookalike.dedupe.keep``, with why), the
others, each with the size, mtime and content hash it had when the plan was made, and the group's action
(``remove-others``, or ``keep-all`` when a person decided so). Nothing moves when a plan is made.

**Applying** does exactly what the plan says, in one of three ways: move the others to a folder outside the photo
root, keeping their paths relative to the root; replace each by a link to its keeper (a hard link, or a relative
symlink where the file system has none; the original goes to the move folder when one is given); or delete them.
Before the first file moves it refuses, in one line, a plan from another index, any file that changed since the plan
(size, mtime or hash), a target inside the photo root or the index, an unwritable target, a name already taken in
the target (nothing is ever overwritten) and too little free space for copies to another disk.

The **journal** (``INDEX_DIR/journals/<plan id>.json``, written atomically) lists every step before the first one
runs, marks a step ``started`` before touching the file system and ``done`` after. Every step is idempotent given
what is on disk (a move is a hard link then an unlink, so between the two the bytes are at both names, never at
none), so a run killed at any point is finished by applying the same plan again, or rolled back by undoing it.
Deleting, and linking without a folder for the originals, cannot be undone; they need an explicit yes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lookalike.dedupe.copies import DEDUPE_FLOOR, DEDUPE_PIXEL, index_duplicates
from lookalike.dedupe.decisions import load_references, remember_references
from lookalike.dedupe.formats import DedupeSettings, siblings_by_name, under
from lookalike.dedupe.keep import KEEP_RULES, choose_keeper, facts_of
from lookalike.dedupe.plan import Journal, JournalStep, Plan, PlanFile, PlanGroup, PlanSummary
from lookalike.errors import ConfigError, LookalikeError
from lookalike.images import content_hash
from lookalike.io import atomic_write_json, fsync_dir, now_iso
from lookalike.store import JOURNALS_DIR

if TYPE_CHECKING:
    from lookalike.view import IndexView, IndexWriter

APPLY_MODES = ("move", "link", "delete")
PARTIAL_SUFFIX = ".lookalike-partial"  # a copy to another disk being written; removed on resume or undo


# --- the plan -------------------------------------------------------------------------------------------------------


def _fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def build_plan(
    index: IndexView,
    keep: str = "best",
    *,
    threshold: float = DEDUPE_FLOOR,
    pixel: float = DEDUPE_PIXEL,
    k: int = 10,
    keepers: set[str] | None = None,
    groups: list[dict[str, Any]] | None = None,
    notes: list[str] | None = None,
    orientations: bool = False,
    settings: DedupeSettings | None = None,
) -> Plan:
    """A dry run: which copy of each duplicate group stays and why, and what happens to the others.

    ``keepers``: names a person chose as keepers (the page's "flip"); a group holding one keeps it. ``groups``: the
    groups of a :func:`~lookalike.dedupe.near_duplicates` run already made (else it runs here, respecting the
    index's decisions). ``orientations``: rotated and mirrored copies count too (see ``near_duplicates``).
    ``settings``: formats, RAW+JPEG siblings, reference and preferred folders, the part of the collection
    (:class:`~lookalike.dedupe.formats.DedupeSettings`); reference folders given are remembered for the index."""
    notes = notes if notes is not None else []
    settings = settings or DedupeSettings()
    if keep not in KEEP_RULES:
        raise ConfigError(f"keep must be one of {', '.join(KEEP_RULES)}, got {keep!r}", setting="keep")
    reference, prefer = settings.folders(index.root)
    reference = remember_references(index.folder, reference) if reference else load_references(index.folder)
    if groups is None:
        groups = index_duplicates(
            index, threshold, k, pixel=pixel, orientations=orientations, notes=notes, settings=settings,
            reference=reference,
        )  # fmt: skip
    ctx = _PlanContext(index, keep, keepers, index.metadata().to_pylist(), index.hashes, notes, [], settings,
                       reference, prefer, siblings_by_name(index.names))  # fmt: skip
    made = [grp for number, g in enumerate(groups, start=1) if (grp := _plan_group(ctx, number, g)) is not None]
    if ctx.changed:
        raise LookalikeError(
            f"{len(ctx.changed)} file(s) changed since they were indexed (first: {ctx.changed[0]}); "
            "update the index first"
        )
    out_groups = tuple(made)
    shown = {"threshold": threshold, "pixel": pixel, "k": k, **settings.to_dict()}
    if reference:
        shown["reference"] = list(reference)
    return Plan(
        id=uuid.uuid4().hex, created=now_iso(), index=str(index.folder.resolve()), root=str(index.root),
        index_created=index.created, keep=keep, settings=shown,
        groups=out_groups, summary=PlanSummary.of(out_groups), notes=tuple(notes), reference=tuple(reference),
    )  # fmt: skip


def make_plan(index: IndexView, keep: str = "best", **options: Any) -> dict[str, Any]:
    """:func:`build_plan` as its JSON object (what ``save_plan`` writes and the web page shows)."""
    return build_plan(index, keep, **options).to_dict()


@dataclass
class _PlanContext:
    """What every group of one plan reads: the index, the rule, the rows, and the settings' folders resolved."""

    index: IndexView
    keep: str
    keepers: set[str] | None
    rows: list[dict[str, Any]]
    hashes: list[str]
    notes: list[str]
    changed: list[str]
    settings: DedupeSettings
    reference: tuple[str, ...]
    prefer: tuple[str, ...]
    siblings: dict[int, int]


def _plan_group(ctx: _PlanContext, number: int, g: dict[str, Any]) -> PlanGroup | None:
    """One group of the plan: its files' facts, the keeper and why (None when fewer than two files are readable).
    Files under a reference folder are never removed (the keeper is one of them when the group has any); a group
    made only of them is reported (``reference-only``); a RAW+JPEG sibling pair is kept or removed together."""
    index, rows = ctx.index, ctx.rows
    by_name = {n: i for i, n in enumerate(index.names)}
    ids = [by_name[p] for p in g["paths"]]
    facts = facts_of([index.root / index.names[i] for i in ids], [index.names[i] for i in ids], [rows[i] for i in ids])
    for i, f in zip(ids, facts, strict=True):
        if isinstance(f, Exception):
            ctx.notes.append(f"group {number}: {index.names[i]} left out ({f})")
    live = [(i, f) for i, f in zip(ids, facts, strict=True) if not isinstance(f, Exception)]
    if len(live) < 2:
        return None
    for i, _ in live:
        fp = _fingerprint(index.root / index.names[i])
        if (fp["size"], fp["mtime_ns"]) != (rows[i]["size"], rows[i]["mtime_ns"]):
            ctx.changed.append(index.names[i])
    order, why = choose_keeper([f for _, f in live], ctx.keep, ctx.settings, ctx.prefer)
    refs = {j for j, (i, _) in enumerate(live) if under(index.names[i], ctx.reference) is not None}
    chosen = [j for j, (i, _) in enumerate(live) if ctx.keepers and index.names[i] in ctx.keepers]
    if chosen:
        order = [chosen[0]] + [j for j in order if j != chosen[0]]
        why = "chosen by hand"
    elif refs and order[0] not in refs:
        first = next(j for j in order if j in refs)
        where = under(index.names[live[first][0]], ctx.reference)
        order = [first] + [j for j in order if j != first]
        why = f"in the reference folder {where or '.'} (never removed); the best copy elsewhere: {why}"
    action = "keep-all" if g.get("decision") == "keep-all" else "remove-others"
    if len(refs) == len(live) and action != "keep-all":
        action = "reference-only"
    kept = {order[0]} | refs
    kept |= _siblings_kept(ctx, live, order, kept)
    files = tuple(
        PlanFile(
            path=index.names[i],
            role="keep" if j in kept or action != "remove-others" else "remove",
            size=rows[i]["size"],
            mtime_ns=rows[i]["mtime_ns"],
            hash=ctx.hashes[i],
            facts=f.to_dict(),
        )
        for j, (i, f) in ((j, live[j]) for j in order)
    )
    return PlanGroup(number, action, files[0].path, why, g["min_score"], g["max_score"], files)


def _siblings_kept(ctx: _PlanContext, live: list[tuple[int, Any]], order: list[int], kept: set[int]) -> set[int]:
    """Positions of ``live`` kept because a RAW+JPEG sibling of theirs stays (kept in the group, or not in it)."""
    if ctx.settings.raw_jpeg != "pairs":
        return set()
    at = {i: j for j, (i, _) in enumerate(live)}
    out: set[int] = set()
    for j in order:
        sib = ctx.siblings.get(live[j][0])
        if j in kept or sib is None:
            continue
        if sib not in at or at[sib] in kept:
            out.add(j)
            if sib not in at and not (ctx.index.root / ctx.index.names[sib]).exists():
                ctx.notes.append(
                    f"{ctx.index.names[live[j][0]]}: its RAW+JPEG sibling {ctx.index.names[sib]} is missing "
                    "(update the index); kept, not removed without it"
                )
    return out


def save_plan(plan: Plan | dict[str, Any], path: str | os.PathLike[str]) -> Path:
    return atomic_write_json(path, plan.to_dict() if isinstance(plan, Plan) else plan)


def load_plan(path: str | os.PathLike[str] | dict[str, Any] | Plan) -> Plan:
    """A plan from its file (or its JSON object); refused in one line when it is not one."""
    if isinstance(path, Plan):
        return path
    if isinstance(path, dict):
        return Plan.from_dict(path)
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise LookalikeError(f"{path}: cannot read the plan ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise LookalikeError(f"{path}: not a plan (invalid JSON: {exc})") from None
    return Plan.from_dict(data, source=path)


def _check_same_index(plan: Plan, index: IndexView) -> None:
    here = str(index.folder.resolve())
    if plan.index != here or plan.root != str(index.root):
        raise LookalikeError(f"this plan was made for another index ({plan.index}), not {here}")
    if plan.index_created != index.created:
        raise LookalikeError(f"this plan was made for an earlier index at {here} (it was rebuilt since)")


def _check_references(plan: Plan, index: IndexView) -> None:
    """No file the plan removes is under a reference folder: the plan's own, or one made a reference since."""
    now = tuple(dict.fromkeys([*plan.reference, *load_references(index.folder)]))
    for g in plan.groups:
        for f in g.removed:
            where = under(f.path, now)
            if where is not None:
                since = "" if where in plan.reference else " (made a reference after this plan)"
                raise LookalikeError(
                    f"{f.path} is in the reference folder {where or '.'}{since}: never removed; make a new plan"
                )


# --- the journal ---------------------------------------------------------------------------------------------------


def journal_path(index: IndexView, plan: Plan | dict[str, Any]) -> Path:
    plan_id = plan.id if isinstance(plan, Plan) else plan["id"]
    return index.folder / JOURNALS_DIR / f"{plan_id}.json"


def load_journal(index: IndexView, plan: Plan) -> Journal | None:
    path = journal_path(index, plan)
    if not path.is_file():
        return None
    try:
        return Journal.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LookalikeError(f"{path}: unreadable journal ({exc})") from None


def _write(journal: Journal, path: Path) -> Journal:
    """Write the journal, stamped; returns the stamped journal."""
    journal = replace(journal, updated=now_iso())
    atomic_write_json(path, journal.to_dict())
    return journal


# --- file operations, each idempotent given what is on disk -----------------------------------------------------------


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _hash_of(path: Path) -> str | None:
    try:
        return content_hash(path.read_bytes())
    except OSError:
        return None


def _place(src: Path, dst: Path, digest: str) -> None:
    """Put ``src``'s bytes at ``dst`` (never overwriting anything else there) and then remove ``src``.

    Same disk: a hard link and an unlink, so the bytes are always at one name or both. Another disk: a copy to a
    partial name, fsynced, checked, hard-linked into place, then the source unlinked."""
    if dst.exists() or dst.is_symlink():
        if not src.exists():
            return  # done earlier
        if not (_same_file(src, dst) or _hash_of(dst) == digest):
            raise LookalikeError(f"{dst} already exists and is another file; nothing was overwritten")
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            partial = dst.with_name(dst.name + PARTIAL_SUFFIX)
            try:
                shutil.copyfile(src, partial)
                with open(partial, "rb+") as fh:
                    os.fsync(fh.fileno())
                if _hash_of(partial) != digest:
                    raise LookalikeError(f"copying {src} to {dst} gave other bytes; stopped") from None
                os.link(partial, dst)
            finally:
                partial.unlink(missing_ok=True)
        fsync_dir(dst.parent)
    src.unlink(missing_ok=True)
    fsync_dir(src.parent)


def _link_to(keeper: Path, at: Path) -> str:
    """Make ``at`` a hard link to ``keeper`` (a relative symlink where hard links are impossible); replaces
    whatever is at ``at`` (the caller has put the original elsewhere, or was told to drop it)."""
    tmp = at.with_name(at.name + PARTIAL_SUFFIX)
    tmp.unlink(missing_ok=True)
    try:
        os.link(keeper, tmp)
        kind = "hardlink"
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        os.symlink(os.path.relpath(keeper, at.parent), tmp)
        kind = "symlink"
    os.replace(tmp, at)
    fsync_dir(at.parent)
    return kind


def _is_link_to(at: Path, keeper: Path) -> bool:
    return _same_file(at, keeper) and (at.is_symlink() or at.stat().st_nlink > 1)


# --- apply, resume, undo ----------------------------------------------------------------------------------------------


def _check_target(target: Path, index: IndexView) -> Path:
    target = target.expanduser().resolve()
    root, idx = index.root.resolve(), index.folder.resolve()
    for inside, what in ((root, "the photo folder"), (idx, "the index folder")):
        if target == inside or target.is_relative_to(inside):
            raise LookalikeError(f"the target {target} is inside {what} ({inside}); choose a folder outside it")
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".lookalike-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise LookalikeError(f"cannot write to the target {target} ({exc.strerror or exc})") from None
    return target


def _steps(plan: Plan, mode: str, target: Path | None) -> tuple[JournalStep, ...]:
    to = target if target is not None and mode in ("move", "link") else None
    return tuple(
        JournalStep(f.path, g.keeper, f.hash, f.size, "todo", str(to / f.path) if to is not None else None)
        for g in plan.groups
        for f in g.removed
    )


def _check_unchanged(plan: Plan, index: IndexView, pending: set[str]) -> None:
    """Every keeper and every file still to be acted on has the size, mtime and content the plan recorded."""
    root = index.root
    for g in plan.groups:
        if g.action != "remove-others":
            continue
        for f in g.files:
            if f.role == "remove" and f.path not in pending:
                continue
            p = root / f.path
            try:
                fp = _fingerprint(p)
            except OSError:
                raise LookalikeError(f"{f.path} is gone since the plan was made; make a new plan") from None
            if fp["size"] != f.size or fp["mtime_ns"] != f.mtime_ns:
                raise LookalikeError(f"{f.path} changed since the plan was made (size or mtime); make a new plan")
            if _hash_of(p) != f.hash:
                raise LookalikeError(f"{f.path} changed since the plan was made (content); make a new plan")


def apply_mode(*, link: bool = False, delete: bool = False) -> str:
    """The apply mode that the ``link`` / ``delete`` switches ask for: link, delete, else move."""
    if link and delete:
        raise ConfigError("link and delete exclude each other: a copy is replaced by a link or deleted", setting="link")
    return "link" if link else "delete" if delete else "move"


def apply_plan(
    index: IndexWriter,
    plan: Plan | dict[str, Any] | str | os.PathLike[str],
    mode: str,
    *,
    target: str | os.PathLike[str] | None = None,
    yes: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Do what ``plan`` says (``mode``: move, link or delete), journalled; resumes a journal the plan left
    unfinished. Returns a summary (``done``, ``steps``, ``mode``, ``journal``, ``links``, ``bytes``)."""
    plan = load_plan(plan)
    _check_same_index(plan, index)
    _check_references(plan, index)
    if mode not in APPLY_MODES:
        raise ConfigError(f"mode must be one of {', '.join(APPLY_MODES)}, got {mode!r}", setting="mode")
    if mode == "move" and target is None:
        raise ConfigError(
            "move_to is needed: moving (the default; else link, or delete) needs a target folder", setting="move_to"
        )
    if mode == "delete" and target is not None:
        raise ConfigError("move_to does not go with deleting (move instead, to keep the files)", setting="move_to")
    if (mode == "delete" or (mode == "link" and target is None)) and not yes:
        what = "deleting" if mode == "delete" else "linking without a folder for the originals"
        raise ConfigError(f"yes is needed: {what} cannot be undone", setting="yes")
    jpath = journal_path(index, plan)
    with index.lock():
        journal = load_journal(index, plan)
        if journal is not None and journal.state in ("applied", "undone"):
            if journal.state == "applied":
                # a run killed after the journal said "applied", while the index was being updated, left the index
                # listing moved files (or a stale count); finishing that update is idempotent (found by crash points)
                _update_index(index, journal)
                return _summary(journal, jpath, already=True)
            raise LookalikeError(f"this plan was applied and then undone ({jpath}); make a new plan")
        dest = _check_target(Path(target), index) if target is not None else None
        if journal is not None:
            if journal.mode != mode or journal.target != (str(dest) if dest else None):
                raise LookalikeError(
                    f"this plan was started as {journal.mode}"
                    + (f" to {journal.target}" if journal.target else "")
                    + "; resume it the same way, or undo it"
                )
        else:
            journal = Journal(
                plan.id, mode, str(dest) if dest else None, "applying", now_iso(), _steps(plan, mode, dest)
            )
        pending = [s for s in journal.steps if s.state == "todo"]
        _check_unchanged(plan, index, {s.path for s in pending})
        for s in pending:
            if s.dest is not None and (Path(s.dest).exists() or Path(s.dest).is_symlink()):
                raise LookalikeError(f"{s.dest} already exists; nothing was moved or overwritten")
        if dest is not None:
            need = sum(s.size for s in pending)
            if pending and os.stat(index.root).st_dev != os.stat(dest).st_dev:
                free = shutil.disk_usage(dest).free
                if need > free:
                    raise LookalikeError(f"the target has {free:,} bytes free; moving needs {need:,}: nothing moved")
        journal = _write(journal, jpath)  # the whole list of intentions, before the first file moves
        journal = _run(index, journal, jpath, on_step)
        journal = _write(replace(journal, state="applied"), jpath)
        _update_index(index, journal)
    return _summary(journal, jpath)


def _run(index: IndexView, journal: Journal, jpath: Path, on_step: Callable[[int, int], None] | None) -> Journal:
    """Each step not done yet, marked started before it touches the file system and done after; the last journal."""
    root = index.root
    total = len(journal.steps)
    for n in range(total):
        s = journal.steps[n]
        if s.state == "done":
            continue
        journal = _write(journal.with_step(n, state="started"), jpath)
        src, keeper = root / s.path, root / s.keeper
        link = s.link
        try:
            if journal.mode == "move":
                _place(src, Path(s.dest), s.hash)  # type: ignore[arg-type]
            elif journal.mode == "delete":
                if src.exists() and not _is_link_to(src, keeper):
                    src.unlink()
                    fsync_dir(src.parent)
            elif not _is_link_to(src, keeper):
                if s.dest is not None:
                    _place(src, Path(s.dest), s.hash)
                link = _link_to(keeper, src)
        except (OSError, LookalikeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise LookalikeError(
                f"stopped at {s.path} ({reason}); {journal.count('done')} of {total} "
                f"steps done, journal {jpath}: apply the plan again to resume, or undo it"
            ) from None
        journal = _write(journal.with_step(n, state="done", link=link), jpath)
        if on_step:
            on_step(n + 1, total)
    return journal


def undo_plan(index: IndexWriter, plan: Plan | dict[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """Put every file an applied (or half-applied) plan moved or linked back where it was. Deleted files, and copies
    linked over without a folder for the originals, cannot come back; they are counted as ``lost``."""
    plan = load_plan(plan)
    _check_same_index(plan, index)
    jpath = journal_path(index, plan)
    with index.lock():
        journal = load_journal(index, plan)
        if journal is None:
            raise LookalikeError("this plan was never applied to this index: nothing to undo")
        if journal.state == "undone":
            return _summary(journal, jpath, already=True)
        journal = _write(replace(journal, state="undoing"), jpath)
        lost = 0
        for n in reversed(range(len(journal.steps))):
            if journal.steps[n].state not in ("started", "done"):
                continue
            put_back = _put_back(index, journal, n, jpath)
            lost += not put_back
            journal = _write(journal.with_step(n, state="undone" if put_back else "lost"), jpath)
        journal = _write(replace(journal, state="undone"), jpath)
        if journal.target:
            _prune_empty(Path(journal.target))
        index.update()  # restored files are new to the index again: embed them (only them); the ANN index follows
    out = _summary(journal, jpath)
    out["lost"] = lost
    return out


def _put_back(index: IndexView, journal: Journal, n: int, jpath: Path) -> bool:
    """Undo step ``n``: True when its file is back (or never left), False when it cannot come back (lost)."""
    s = journal.steps[n]
    src, keeper = index.root / s.path, index.root / s.keeper
    dest = Path(s.dest) if s.dest is not None else None
    try:
        if dest is not None and (dest.exists() or Path(str(dest) + PARTIAL_SUFFIX).exists()):
            Path(str(dest) + PARTIAL_SUFFIX).unlink(missing_ok=True)
            if dest.exists():
                if _is_link_to(src, keeper) or src.is_symlink():
                    src.unlink()
                _place(dest, src, s.hash)
        elif not src.exists() or (journal.mode != "move" and _is_link_to(src, keeper)):
            return False
    except (OSError, LookalikeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LookalikeError(f"undo stopped at {s.path} ({reason}); journal {jpath}: undo again") from None
    return True


def _prune_empty(folder: Path) -> None:
    """Remove the folders an undo emptied below ``folder`` (and it, if empty): only empty ones, never a file."""
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            d.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


def _summary(journal: Journal, jpath: Path, already: bool = False) -> dict[str, Any]:
    steps = journal.steps
    return {
        "plan": journal.plan,
        "mode": journal.mode,
        "target": journal.target,
        "state": journal.state,
        "already": already,
        "steps": len(steps),
        "done": journal.count("done"),
        "undone": journal.count("undone"),
        "links": {kind: sum(s.link == kind for s in steps) for kind in ("hardlink", "symlink")},
        "bytes": int(sum(s.size for s in steps if s.state == "done")),
        "journal": str(jpath),
    }


def _update_index(index: IndexWriter, journal: Journal) -> None:
    """The index follows the files: moved or deleted copies leave it; a copy replaced by a link becomes a second
    row of its keeper (same hash, size, mtime and vector), so the next update has nothing to re-embed."""
    done = [s for s in journal.steps if s.state == "done"]
    linked = [(s.path, s.keeper) for s in done] if journal.mode == "link" else None
    index.follow_files({s.path for s in done}, linked)
