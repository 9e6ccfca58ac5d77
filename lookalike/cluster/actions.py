"""Acting on duplicates without losing a photo: a plan (dry run), applying it with a journal, resuming, undoing.

A **plan** is a JSON file: for each group of copies, the keeper (chosen by ``lookalike.cluster.keep``, with why), the
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lookalike.cluster.decisions import Decisions
from lookalike.cluster.dedupe import DEDUPE_FLOOR, DEDUPE_PIXEL, near_duplicates
from lookalike.cluster.keep import KEEP_RULES, choose_keeper, facts_of
from lookalike.display import DuplicatePlan
from lookalike.errors import ConfigError, LookalikeError
from lookalike.images import content_hash
from lookalike.io import atomic_write_json, fsync_dir, now_iso
from lookalike.search import refresh_ann
from lookalike.store import JOURNALS_DIR

if TYPE_CHECKING:
    from lookalike.index import Index

PLAN_FORMAT = 1
APPLY_MODES = ("move", "link", "delete")
PARTIAL_SUFFIX = ".lookalike-partial"  # a copy to another disk being written; removed on resume or undo


# --- the plan -------------------------------------------------------------------------------------------------------


def _fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def make_plan(
    index: Index,
    keep: str = "best",
    *,
    threshold: float = DEDUPE_FLOOR,
    pixel: float = DEDUPE_PIXEL,
    k: int = 10,
    keepers: set[str] | None = None,
    groups: list[dict[str, Any]] | None = None,
    notes: list[str] | None = None,
    orientations: bool = False,
) -> dict[str, Any]:
    """A dry run: which copy of each duplicate group stays and why, and what happens to the others.

    ``keepers``: names a person chose as keepers (the page's "flip"); a group holding one keeps it. ``groups``: the
    groups of a :func:`~lookalike.cluster.near_duplicates` run already made (else it runs here, respecting the
    index's decisions). ``orientations``: rotated and mirrored copies count too (see ``near_duplicates``)."""
    notes = notes if notes is not None else []
    if keep not in KEEP_RULES:
        raise ConfigError(f"keep must be one of {', '.join(KEEP_RULES)}, got {keep!r}", setting="keep")
    store = index.store
    hashes = store.column("hash")
    if groups is None:
        groups = near_duplicates(
            index.vectors, index.names, threshold, k, paths=index.paths, pixel=pixel, notes=notes,
            hashes=hashes, decisions=Decisions.load(store.path),
            turned=index.orientation_vectors(notes=notes) if orientations else None,
            features=index.features if orientations else None,
        )  # fmt: skip
    rows = store.metadata().to_pylist()
    by_name = {n: i for i, n in enumerate(index.names)}
    out_groups = []
    changed: list[str] = []
    for number, g in enumerate(groups, start=1):
        ids = [by_name[p] for p in g["paths"]]
        paths = [index.root / index.names[i] for i in ids]
        facts = facts_of(paths, [index.names[i] for i in ids], [rows[i] for i in ids])
        bad = [(i, f) for i, f in zip(ids, facts, strict=True) if isinstance(f, Exception)]
        for i, f in bad:
            notes.append(f"group {number}: {index.names[i]} left out ({f})")
        live = [(i, f) for i, f in zip(ids, facts, strict=True) if not isinstance(f, Exception)]
        if len(live) < 2:
            continue
        for i, _ in live:
            fp = _fingerprint(index.root / index.names[i])
            if (fp["size"], fp["mtime_ns"]) != (rows[i]["size"], rows[i]["mtime_ns"]):
                changed.append(index.names[i])
        order, why = choose_keeper([f for _, f in live], keep)
        chosen = [j for j, (i, _) in enumerate(live) if keepers and index.names[i] in keepers]
        if chosen:
            order = [chosen[0]] + [j for j in order if j != chosen[0]]
            why = "chosen by hand"
        action = "keep-all" if g.get("decision") == "keep-all" else "remove-others"
        files = []
        for rank, j in enumerate(order):
            i, f = live[j]
            files.append(
                {
                    "path": index.names[i],
                    "role": "keep" if rank == 0 or action == "keep-all" else "remove",
                    "size": rows[i]["size"],
                    "mtime_ns": rows[i]["mtime_ns"],
                    "hash": hashes[i],
                    "facts": f.to_dict(),
                }
            )
        out_groups.append(
            {
                "id": number,
                "action": action,
                "keeper": files[0]["path"],
                "why": why,
                "min_score": g["min_score"],
                "max_score": g["max_score"],
                "files": files,
            }
        )
    if changed:
        raise LookalikeError(
            f"{len(changed)} file(s) changed since they were indexed (first: {changed[0]}); update the index first"
        )
    removed = [f for g in out_groups for f in g["files"] if f["role"] == "remove"]
    return DuplicatePlan({
        "lookalike_plan": PLAN_FORMAT,
        "id": uuid.uuid4().hex,
        "created": now_iso(),
        "index": str(store.path.resolve()),
        "root": str(index.root),
        "index_created": store.meta.get("created"),
        "keep": keep,
        "settings": {"threshold": threshold, "pixel": pixel, "k": k},
        "groups": out_groups,
        "summary": {
            "groups": len(out_groups),
            "kept_all": sum(g["action"] == "keep-all" for g in out_groups),
            "remove": len(removed),
            "bytes": int(sum(f["size"] for f in removed)),
        },
        "notes": notes,
    })  # fmt: skip


def save_plan(plan: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    return atomic_write_json(path, plan)


def load_plan(path: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(path, dict):
        return path
    try:
        plan = json.loads(Path(path).read_text())
    except OSError as exc:
        raise LookalikeError(f"{path}: cannot read the plan ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise LookalikeError(f"{path}: not a plan (invalid JSON: {exc})") from None
    if not isinstance(plan, dict) or plan.get("lookalike_plan") != PLAN_FORMAT or "id" not in plan:
        raise LookalikeError(f"{path}: not a lookalike dedupe plan")
    return plan


def _check_same_index(plan: dict[str, Any], index: Index) -> None:
    here = str(index.store.path.resolve())
    if plan.get("index") != here or plan.get("root") != str(index.root):
        raise LookalikeError(f"this plan was made for another index ({plan.get('index')}), not {here}")
    if plan.get("index_created") != index.store.meta.get("created"):
        raise LookalikeError(f"this plan was made for an earlier index at {here} (it was rebuilt since)")


# --- the journal ---------------------------------------------------------------------------------------------------


def journal_path(index: Index, plan: dict[str, Any]) -> Path:
    return index.store.path / JOURNALS_DIR / f"{plan['id']}.json"


def load_journal(index: Index, plan: dict[str, Any]) -> dict[str, Any] | None:
    path = journal_path(index, plan)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LookalikeError(f"{path}: unreadable journal ({exc})") from None


def _write(journal: dict[str, Any], path: Path) -> None:
    journal["updated"] = now_iso()
    atomic_write_json(path, journal)


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


def _check_target(target: Path, index: Index) -> Path:
    target = target.expanduser().resolve()
    root, idx = index.root.resolve(), index.store.path.resolve()
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


def _steps(plan: dict[str, Any], mode: str, target: Path | None) -> list[dict[str, Any]]:
    steps = []
    for g in plan.get("groups", []):
        if g.get("action") != "remove-others":
            continue
        keeper = g["keeper"]
        for f in g["files"]:
            if f["role"] != "remove":
                continue
            step = {"path": f["path"], "keeper": keeper, "hash": f["hash"], "size": f["size"], "state": "todo"}
            if target is not None and mode in ("move", "link"):
                step["dest"] = str(target / f["path"])
            steps.append(step)
    return steps


def _check_unchanged(plan: dict[str, Any], index: Index, pending: set[str]) -> None:
    """Every keeper and every file still to be acted on has the size, mtime and content the plan recorded."""
    root = index.root
    for g in plan.get("groups", []):
        if g.get("action") != "remove-others":
            continue
        for f in g["files"]:
            if f["role"] == "remove" and f["path"] not in pending:
                continue
            p = root / f["path"]
            try:
                fp = _fingerprint(p)
            except OSError:
                raise LookalikeError(f"{f['path']} is gone since the plan was made; make a new plan") from None
            if fp["size"] != f["size"] or fp["mtime_ns"] != f["mtime_ns"]:
                raise LookalikeError(f"{f['path']} changed since the plan was made (size or mtime); make a new plan")
            if _hash_of(p) != f["hash"]:
                raise LookalikeError(f"{f['path']} changed since the plan was made (content); make a new plan")


def apply_plan(
    index: Index,
    plan: dict[str, Any] | str | os.PathLike[str],
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
    if mode not in APPLY_MODES:
        raise ConfigError(f"mode must be one of {', '.join(APPLY_MODES)}, got {mode!r}", setting="mode")
    if mode == "move" and target is None:
        raise ConfigError("move_to is needed: moving needs a target folder", setting="move_to")
    if mode == "delete" and target is not None:
        raise ConfigError("move_to does not go with deleting (move instead, to keep the files)", setting="move_to")
    if (mode == "delete" or (mode == "link" and target is None)) and not yes:
        what = "deleting" if mode == "delete" else "linking without a folder for the originals"
        raise ConfigError(f"yes is needed: {what} cannot be undone", setting="yes")
    jpath = journal_path(index, plan)
    with index.store.lock():
        journal = load_journal(index, plan)
        if journal is not None and journal["state"] in ("applied", "undone"):
            if journal["state"] == "applied":
                # a run killed after the journal said "applied", while the index was being updated, left the index
                # listing moved files (or a stale count); finishing that update is idempotent (found by crash points)
                _update_index(index, journal)
                return _summary(journal, jpath, already=True)
            raise LookalikeError(f"this plan was applied and then undone ({jpath}); make a new plan")
        dest = _check_target(Path(target), index) if target is not None else None
        if journal is not None:
            if journal["mode"] != mode or journal.get("target") != (str(dest) if dest else None):
                raise LookalikeError(
                    f"this plan was started as {journal['mode']}"
                    + (f" to {journal['target']}" if journal.get("target") else "")
                    + "; resume it the same way, or undo it"
                )
        else:
            journal = {
                "plan": plan["id"], "mode": mode, "target": str(dest) if dest else None, "state": "applying",
                "started": now_iso(), "steps": _steps(plan, mode, dest),
            }  # fmt: skip
        todo = {s["path"] for s in journal["steps"] if s["state"] == "todo"}
        _check_unchanged(plan, index, todo)
        pending = [s for s in journal["steps"] if s["state"] == "todo"]
        for s in pending:
            if "dest" in s and (Path(s["dest"]).exists() or Path(s["dest"]).is_symlink()):
                raise LookalikeError(f"{s['dest']} already exists; nothing was moved or overwritten")
        if dest is not None:
            need = sum(s["size"] for s in pending)
            if pending and os.stat(index.root).st_dev != os.stat(dest).st_dev:
                free = shutil.disk_usage(dest).free
                if need > free:
                    raise LookalikeError(f"the target has {free:,} bytes free; moving needs {need:,}: nothing moved")
        _write(journal, jpath)  # the whole list of intentions, before the first file moves
        _run(index, journal, jpath, on_step)
        journal["state"] = "applied"
        _write(journal, jpath)
        _update_index(index, journal)
    return _summary(journal, jpath)


def _run(index: Index, journal: dict[str, Any], jpath: Path, on_step: Callable[[int, int], None] | None) -> None:
    root = index.root
    steps = journal["steps"]
    for n, s in enumerate(steps):
        if s["state"] == "done":
            continue
        s["state"] = "started"
        _write(journal, jpath)
        src, keeper = root / s["path"], root / s["keeper"]
        try:
            if journal["mode"] == "move":
                _place(src, Path(s["dest"]), s["hash"])
            elif journal["mode"] == "delete":
                if src.exists() and not _is_link_to(src, keeper):
                    src.unlink()
                    fsync_dir(src.parent)
            else:
                if not _is_link_to(src, keeper):
                    if "dest" in s:
                        _place(src, Path(s["dest"]), s["hash"])
                    s["link"] = _link_to(keeper, src)
        except (OSError, LookalikeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise LookalikeError(
                f"stopped at {s['path']} ({reason}); {sum(x['state'] == 'done' for x in steps)} of {len(steps)} "
                f"steps done, journal {jpath}: apply the plan again to resume, or undo it"
            ) from None
        s["state"] = "done"
        _write(journal, jpath)
        if on_step:
            on_step(n + 1, len(steps))


def undo_plan(index: Index, plan: dict[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """Put every file an applied (or half-applied) plan moved or linked back where it was. Deleted files, and copies
    linked over without a folder for the originals, cannot come back; they are counted as ``lost``."""
    plan = load_plan(plan)
    _check_same_index(plan, index)
    jpath = journal_path(index, plan)
    with index.store.lock():
        journal = load_journal(index, plan)
        if journal is None:
            raise LookalikeError("this plan was never applied to this index: nothing to undo")
        if journal["state"] == "undone":
            return _summary(journal, jpath, already=True)
        root = index.root
        journal["state"] = "undoing"
        _write(journal, jpath)
        lost = 0
        for s in reversed(journal["steps"]):
            if s["state"] not in ("started", "done"):
                continue
            src, keeper = root / s["path"], root / s["keeper"]
            dest = Path(s["dest"]) if "dest" in s else None
            try:
                if dest is not None and (dest.exists() or Path(str(dest) + PARTIAL_SUFFIX).exists()):
                    Path(str(dest) + PARTIAL_SUFFIX).unlink(missing_ok=True)
                    if dest.exists():
                        if _is_link_to(src, keeper) or src.is_symlink():
                            src.unlink()
                        _place(dest, src, s["hash"])
                elif not src.exists() or (journal["mode"] != "move" and _is_link_to(src, keeper)):
                    lost += 1
                    s["state"] = "lost"
                    _write(journal, jpath)
                    continue
            except (OSError, LookalikeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise LookalikeError(f"undo stopped at {s['path']} ({reason}); journal {jpath}: undo again") from None
            s["state"] = "undone"
            _write(journal, jpath)
        journal["state"] = "undone"
        _write(journal, jpath)
        if journal.get("target"):
            _prune_empty(Path(journal["target"]))
        index.update()  # restored files are new to the index again: embed them (only them)
        refresh_ann(index.store)
    out = _summary(journal, jpath)
    out["lost"] = lost
    return out


def _prune_empty(folder: Path) -> None:
    """Remove the folders an undo emptied below ``folder`` (and it, if empty): only empty ones, never a file."""
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            d.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


def _summary(journal: dict[str, Any], jpath: Path, already: bool = False) -> dict[str, Any]:
    steps = journal["steps"]
    return {
        "plan": journal["plan"],
        "mode": journal["mode"],
        "target": journal.get("target"),
        "state": journal["state"],
        "already": already,
        "steps": len(steps),
        "done": sum(s["state"] == "done" for s in steps),
        "undone": sum(s["state"] == "undone" for s in steps),
        "links": {kind: sum(s.get("link") == kind for s in steps) for kind in ("hardlink", "symlink")},
        "bytes": int(sum(s["size"] for s in steps if s["state"] == "done")),
        "journal": str(jpath),
    }


def _update_index(index: Index, journal: dict[str, Any]) -> None:
    """The index follows the files: moved or deleted copies leave it; a copy replaced by a link becomes a second
    row of its keeper (same hash, size, mtime and vector), so the next update has nothing to re-embed."""
    store = index.store
    table = store.table
    names = table.column("path").to_pylist()
    row_of = {n: i for i, n in enumerate(names)}
    done = [s for s in journal["steps"] if s["state"] == "done"]
    gone = {s["path"] for s in done}
    keep = [i for i, n in enumerate(names) if n not in gone]
    parts = [table.take(keep)]
    if journal["mode"] == "link":
        linked = [s for s in done if s["keeper"] in row_of]
        if linked:
            rows = table.take([row_of[s["keeper"]] for s in linked])
            st = [os.stat(index.root / s["path"]) for s in linked]
            rows = rows.set_column(rows.schema.get_field_index("path"), "path", pa.array([s["path"] for s in linked]))
            rows = rows.set_column(
                rows.schema.get_field_index("mtime_ns"), "mtime_ns", pa.array([x.st_mtime_ns for x in st], pa.int64())
            )
            parts.append(rows)
    new = pa.concat_tables([store.conform(p) for p in parts])
    if new.num_rows != table.num_rows or journal["mode"] == "link" or store.meta.get("count") != new.num_rows:
        store.commit(new, store.skipped)
        refresh_ann(store)
