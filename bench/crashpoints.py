"""Crash-point testing, in the manner of SQLite's: kill each writing command at every write it makes, then prove
that nothing was lost.

Each command (``index``, ``fit``, ``vocab fit``, ``cluster --export``) runs as a user runs it, ``lookalike`` in a
subprocess, with ``LOOKALIKE_CRASH_AT=N`` (the hook in :func:`lookalike.io.atomic_write`) so it SIGKILLs itself at
its N-th write step: after a temporary file is complete, or right after it is renamed into place. After each kill:

1. the index opens (``Index.open``) and ``lookalike info --json`` succeeds, with as many images as table rows;
2. re-running the same command, uninterrupted, finishes;
3. everything it leaves (index folder, export folder) equals what a never-interrupted run leaves: every file, every
   table cell, every JSON value, vectors to 1e-5 (a resumed run embeds in other batches). Values that differ between
   two clean runs anyway (timings, timestamps) are found by running the command twice and are left out.

The test suite runs a few points per command (tests/test_crashpoints.py); ``python -m bench.crashpoints`` runs every
step of every command on a larger folder and records the count in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NAME = "crashpoints"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Command:
    """One writing command: ``args(work)`` is its CLI arguments; ``prepare(work)`` makes the state it starts from."""

    name: str
    args: Callable[[Path], list[str]]
    prepare: Callable[[Path], None]
    outputs: Callable[[Path], list[Path]]
    setup: Callable[[Path], None] | None = None
    """Run on every copy of the prepared state before the command (what must name the copy's own paths)."""


@dataclass
class Outcome:
    command: str
    steps: int
    tried: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    code = "from lookalike.cli import main; main()"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    for key in ("LOOKALIKE_CRASH_AT", "LOOKALIKE_WRITE_TRACE"):
        if env is None or key not in env:
            full_env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=full_env, capture_output=True, text=True, timeout=timeout
    )


def check(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        raise AssertionError(f"{what} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")


def make_photos(folder: Path, per_class: int) -> None:
    from lookalike.samples import make_samples

    make_samples(folder, per_class=per_class, size=96)


def commands(photos_per_class: int) -> list[Command]:
    """index (checkpointing every 3 images), then fit, vocab fit, cluster --export, map, features, dedupe apply
    (its journal), a duplicate decision (decisions.json) over a built index, and an int8 index (its calibrated model
    file)."""

    def fresh(work: Path) -> None:
        make_photos(work / "photos", photos_per_class)

    def built(work: Path) -> None:
        fresh(work)
        check(run_cli(index_args(work)), "index")

    def with_copies(work: Path) -> None:
        """A built index over photos of which a few are byte-identical copies in another folder (for dedupe)."""
        fresh(work)
        originals = sorted((work / "photos").glob("*/*.jpg"))[:: max(1, photos_per_class)]
        (work / "photos" / "copies").mkdir()
        for i, src in enumerate(originals):
            shutil.copy2(src, work / "photos" / "copies" / f"copy_{i:02d}.jpg")
        check(run_cli(index_args(work)), "index")

    def make_plan(work: Path) -> None:
        """A plan for this copy (it names the copy's index); its id fixed so every run keeps the same journal name."""
        plan = work / "plan.json"
        check(run_cli(["dedupe", "plan", str(plan), "--index", str(work / "idx")]), "dedupe plan")
        data = json.loads(plan.read_text())
        data["id"] = "crashpoints"
        plan.write_text(json.dumps(data))

    def index_args(work: Path, *extra: str) -> list[str]:
        return ["index", str(work / "photos"), "--index", str(work / "idx"), "--quiet", "--batch-size", "2",
                "--checkpoint-every", "3", "--resolution", "64", *extra]  # fmt: skip

    def idx(work: Path) -> list[Path]:
        return [work / "idx"]

    def dedupe_outputs(work: Path) -> list[Path]:
        return [work / "idx", work / "photos", work / "moved"]

    def copies(work: Path) -> list[str]:
        return [str(p) for p in sorted((work / "photos" / "copies").glob("*.jpg"))[:2]]

    return [
        Command("index", index_args, fresh, idx),
        Command("fit", lambda w: ["fit", "--index", str(w / "idx"), "--method", "linear"], built, idx),
        Command("vocab fit", lambda w: ["vocab", "fit", "--index", str(w / "idx"), "--clusters", "4"], built, idx),
        Command(
            "cluster --export",
            lambda w: ["cluster", "--index", str(w / "idx"), "--export", str(w / "out"), "--json"],
            built,
            lambda w: [w / "idx", w / "out"],
        ),
        Command("map", lambda w: ["map", "--index", str(w / "idx"), "--method", "pca", "--json"], built, idx),
        Command("features", lambda w: ["features", "--index", str(w / "idx"), "--workers", "1", "--quiet"], built, idx),
        Command(
            "dedupe apply",
            lambda w: [
                "dedupe",
                "apply",
                str(w / "plan.json"),
                "--index",
                str(w / "idx"),
                "--move-to",
                str(w / "moved"),
                "--json",
                "--quiet",
            ],
            with_copies,
            dedupe_outputs,
            setup=make_plan,
        ),
        Command(
            "dedupe decide not-duplicates",
            lambda w: ["dedupe", "decide", "not-duplicates", *copies(w), "--index", str(w / "idx"), "--json"],
            with_copies,
            idx,
        ),
        # "index" above runs at the default precision, int8, copying the machine's calibrated model into the index
        Command("index --precision fp32", lambda w: index_args(w, "--precision", "fp32"), fresh, idx),
        Command("index --calibration photos", lambda w: index_args(w, "--calibration", "photos"), fresh, idx),
    ]


# --- what a folder holds, compared value by value -------------------------------------------------------------------


def snapshot(folders: list[Path]) -> dict[str, Any]:
    """Every file below ``folders`` as comparable values: JSON and Parquet parsed, .npz as arrays, others as bytes."""
    import pyarrow.parquet as pq

    out: dict[str, Any] = {}
    for folder in folders:
        if not folder.exists():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_dir():
                continue
            key = f"{folder.name}/{path.relative_to(folder).as_posix()}"
            if path.is_symlink():
                out[key] = ("symlink", os.readlink(path))
            elif path.suffix == ".json":
                out[key] = json.loads(path.read_text())
            elif path.suffix == ".parquet":
                table = pq.read_table(path).to_pydict()
                out[key] = {k: np.asarray(v) if k == "vector" else v for k, v in table.items()}
            elif path.suffix == ".npz":
                with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
                    out[key] = {k: z[k] for k in z.files}
            else:
                out[key] = path.read_bytes()
    return out


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for k, v in value.items():
            flat.update(_flatten(v, f"{prefix}/{k}"))
        return flat
    if isinstance(value, list) and value and all(isinstance(v, dict | list) for v in value):
        flat = {f"{prefix}#len": len(value)}
        for i, v in enumerate(value):
            flat.update(_flatten(v, f"{prefix}[{i}]"))
        return flat
    return {prefix: value}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "fc" and b.dtype.kind in "fc":
            return bool(np.allclose(a, b, rtol=1e-4, atol=1e-5))
        return bool(np.array_equal(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return bool(np.isclose(a, b, rtol=1e-4, atol=1e-5))
    return a == b


def differences(ref: dict[str, Any], got: dict[str, Any], volatile: set[str]) -> list[str]:
    fa, fb = _flatten(ref), _flatten(got)
    diffs = [f"missing {k}" for k in fa.keys() - fb.keys() if k not in volatile]
    diffs += [f"extra {k}" for k in fb.keys() - fa.keys() if k not in volatile]
    diffs += [f"differs {k}" for k in fa.keys() & fb.keys() if k not in volatile and not _same(fa[k], fb[k])]
    return sorted(diffs)


# --- the harness ----------------------------------------------------------------------------------------------------


def _fresh_copy(base: Path, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(base, dest, symlinks=True)
    return dest


def consistent(work: Path) -> str | None:
    """After a kill: the index opens and ``info`` agrees with the table, or there is no index yet at all."""
    from lookalike.errors import IndexMissingError
    from lookalike.index import Index

    try:
        index = Index.open(work / "idx")
    except IndexMissingError:
        return None if not (work / "idx" / "meta.json").exists() else "meta.json exists but the index does not open"
    except Exception as exc:
        return f"index does not open: {type(exc).__name__}: {exc}"
    proc = run_cli(["info", "--index", str(work / "idx"), "--json"])
    if proc.returncode != 0:
        return f"info failed: {proc.stderr.strip()[-300:]}"
    info = json.loads(proc.stdout)
    images = info.get("images")
    if images != len(index) or len(index.vectors) != len(index):
        return f"info says {images} images, the table has {len(index)} rows and {len(index.vectors)} vectors"
    return None


def trial(cmd: Command, base: Path, scratch: Path, step: int, reference: dict, volatile: set[str]) -> str | None:
    work = _fresh_copy(base, scratch)
    if cmd.setup:
        cmd.setup(work)
    killed = run_cli(cmd.args(work), env={"LOOKALIKE_CRASH_AT": str(step)})
    if killed.returncode != -9:
        return f"step {step}: expected SIGKILL, exit {killed.returncode}: {killed.stderr.strip()[-200:]}"
    problem = consistent(work)
    if problem:
        return f"step {step}: after the kill: {problem}"
    again = run_cli(cmd.args(work))
    if again.returncode != 0:
        return f"step {step}: re-run failed: {again.stderr.strip()[-300:]}"
    diffs = differences(reference, snapshot(cmd.outputs(work)), volatile)
    if diffs:
        return f"step {step}: re-run differs from a clean run: {', '.join(diffs[:5])}"
    return None


def prepare_command(cmd: Command, tmp: Path) -> tuple[Path, int, dict, set[str]]:
    """The starting state, how many write steps a clean run makes, its result, and what varies between clean runs."""
    base = tmp / f"base-{cmd.name.replace(' ', '-')}"
    base.mkdir(parents=True)
    cmd.prepare(base)
    runs = []
    steps = 0
    for i in range(2):
        if i:  # a clock stamp (meta "updated", to the second) must differ between the two runs to be seen as volatile
            time.sleep(1.1)
        work = _fresh_copy(base, tmp / f"clean{i}")
        if cmd.setup:
            cmd.setup(work)
        trace = tmp / f"trace{i}.txt"
        check(run_cli(cmd.args(work), env={"LOOKALIKE_WRITE_TRACE": str(trace)}), f"clean {cmd.name}")
        steps = len(trace.read_text().splitlines()) if trace.exists() else 0
        trace.unlink(missing_ok=True)
        runs.append(snapshot(cmd.outputs(work)))
    fa, fb = _flatten(runs[0]), _flatten(runs[1])
    volatile = {k for k in fa.keys() | fb.keys() if k not in fa or k not in fb or not _same(fa[k], fb[k])}
    return base, steps, runs[0], volatile


def run_command(cmd: Command, tmp: Path, points: int | None, log: Callable[[str], None] = print) -> Outcome:
    """Crash ``cmd`` at ``points`` write steps spread over its run (all of them when None)."""
    started = time.perf_counter()
    base, steps, reference, volatile = prepare_command(cmd, tmp)
    outcome = Outcome(cmd.name, steps)
    chosen = range(1, steps + 1) if points is None or points >= steps else np.linspace(1, steps, points)
    for step in sorted({round(float(s)) for s in chosen}):
        outcome.tried.append(step)
        problem = trial(cmd, base, tmp / "trial", step, reference, volatile)
        if problem:
            outcome.failures.append(problem)
            log(f"  {cmd.name} {problem}")
    outcome.seconds = time.perf_counter() - started
    return outcome


FOUND = [
    "`cluster --export` killed half-way left a folder without its marker, which every later export refused as "
    "somebody else's (the marker is now written first)",
    "killed writes left `.NAME.*.tmp` files behind for ever (the next write of the same file, and every index "
    "update, now removes those older than the process)",
    "`dedupe --not-duplicates` killed after `decisions.json` was renamed into place and then re-run recorded the "
    "decision twice (a repeated decision is now remembered once; `tests/test_cluster_actions.py`)",
    "`vocab fit` killed after its new `meta.json` (VLAD, 4x wider vectors) was in place but before the table was "
    "re-embedded (4 of its 14 steps): the index opened 24 images as 6 garbage vectors, the old table reshaped to the "
    "new width (a rebuild now removes the old table first, and a table whose width is not the header's is refused; "
    "`tests/test_store.py`)",
    "`cluster --export` killed after the marker's temporary file was complete, before its rename (1 of 18 steps): "
    "the folder held only that file, and the re-run refused it as somebody else's (the marker's own temporary "
    "file no longer counts; `tests/test_cluster.py`)",
    "`dedupe --apply` killed after its journal said applied, while the index was being updated (6 of its 38 "
    'steps): the re-run answered "already applied" and left the moved files in the index, or a stale count '
    "(the re-run now finishes the index update; `tests/test_crashpoints.py`)",
]
"""What crash-point runs found and what was fixed (kept here so the section states it beside the counts)."""


def report(outcomes: list[Outcome], args: argparse.Namespace, planned: list[str]) -> str:
    from bench.report import markdown_table

    rows = [[o.command, o.steps, len(o.tried), len(o.tried) - len(o.failures), len(o.failures), f"{o.seconds:.0f}"]
            for o in outcomes]  # fmt: skip
    tried = sum(len(o.tried) for o in outcomes)
    failed = sum(len(o.failures) for o in outcomes)
    done = [o.command for o in outcomes]
    left = [n for n in planned if n not in done]
    points = "for every N" if args.points is None else f"at {args.points} N spread over the run"
    return "\n".join(
        [
            f"## Crash points (`{NAME}`)",
            "",
            f"Each writing command killed with SIGKILL at its N-th write step (a temporary file complete, or just "
            f"renamed into place), {points}, on {4 * args.per_class} sample photos (96 px, indexed at 64 px; "
            "`index` checkpoints every 3 images, batch 2; `dedupe` runs have a byte-identical copy of every "
            f"{args.per_class}th photo in `copies/`). After each kill the index must open and `info` agree "
            "with the table; then the command re-run must finish and leave every file, table cell and JSON value "
            "(index folder, export folder, photo folder and move target for `dedupe --apply`) equal to a "
            "never-interrupted run's (vectors to 1e-5; values that differ between two clean runs, i.e. "
            "timings and timestamps, excluded).",
            "",
            markdown_table(["command", "write steps", "crash points tried", "survived", "failed", "seconds"], rows),
            "",
            f"Total: {tried} crash points, {tried - failed} survived, {failed} failed."
            + "".join(f"\n- {f}" for o in outcomes for f in o.failures[:3])
            + (f" Not run (time): {', '.join(left)}." if left else ""),
            "",
            "Found by crash-point runs and fixed: " + "; ".join(FOUND) + ".",
            *(
                [
                    "",
                    "Run without the bench lock beside other work on the same 2 cores: the seconds are inflated; the "
                    "points tried and survived are what this run is about.",
                ]
                if args.shared
                else []
            ),
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=6, help="sample photos per class (4 classes)")
    ap.add_argument("--points", type=int, default=None, help="crash points per command (default: every step)")
    ap.add_argument("--only", default=None, help="comma-separated command names (default: all)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--shared", action="store_true", help="run without the bench lock: the section says so")
    args = ap.parse_args()

    from bench.report import write_section

    planned = [c.name for c in commands(args.per_class) if not args.only or c.name in args.only.split(",")]
    outcomes: list[Outcome] = []
    settings = {"photos": 4 * args.per_class, "points": args.points or "every step"}
    with tempfile.TemporaryDirectory(prefix="lookalike-crash-") as tmp:
        warm = Path(tmp) / "warm"  # the ONNX export cache is written once, before any step is counted
        make_photos(warm / "photos", 1)
        check(run_cli(["index", str(warm / "photos"), "--index", str(warm / "idx"), "--quiet", "--resolution", "64"]),
              "warm-up")  # fmt: skip
        for cmd in commands(args.per_class):
            if cmd.name not in planned:
                continue
            out = run_command(cmd, Path(tmp) / cmd.name.replace(" ", "-"), args.points)
            print(f"{cmd.name}: {len(out.tried)} of {out.steps} steps, {len(out.failures)} failures, "
                  f"{out.seconds:.0f} s", flush=True)  # fmt: skip
            outcomes.append(out)
            if not args.no_write:  # after each command: a run stopped for time still records what it did
                write_section(NAME, report(outcomes, args, planned), settings)
    print(report(outcomes, args, planned))


if __name__ == "__main__":
    main()
