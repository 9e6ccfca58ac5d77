"""Write one benchmark's results into its own section of BENCHMARKS.md, with the machine it ran on.

Each benchmark owns the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``; re-running it replaces
just that section, so benchmarks can run separately and the file stays one document. The section's last lines say
when, where and at which commit it ran (and whether the code differed from that commit), the command line, and the
settings the benchmark passes (model, resolution, pooling, data, k, ...).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_FILE = ROOT / "BENCHMARKS.md"
SHARED = ROOT.parent / "shared" / "data"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024**2:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, Python {platform.python_version()}, {platform.system()}"


_LOAD_AT_IMPORT = os.getloadavg()[0]  # a benchmark imports this module first thing: the load when it started


def load_note() -> str:
    """The 1-minute load average when the benchmark started and now: on a shared machine, how busy it was."""
    return f"load average {_LOAD_AT_IMPORT:.1f} at start, {os.getloadavg()[0]:.1f} at end"


def git_rev() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def _git(*args: str) -> list[str]:
    try:
        return subprocess.check_output(["git", *args], cwd=ROOT, text=True).splitlines()
    except (OSError, subprocess.CalledProcessError):
        return []


def _dirty(paths: list[str]) -> set[str]:
    return {line[3:] for line in _git("status", "--porcelain", "--untracked-files=no", "--", *paths) if line.strip()}


# A benchmark imports this module first thing: the commit checked out, and the code that differed from it, when it
# started (other engineers commit while long benchmarks run).
_START_REV = git_rev()
_START_DIRTY = _dirty(["lookalike", "bench"])


def imported_code() -> list[str]:
    """The lookalike and bench source files this process imported (the code that ran), relative to the project."""
    files = {Path(f).resolve() for m in list(sys.modules.values()) if (f := getattr(m, "__file__", None))}
    return sorted(
        str(f.relative_to(ROOT))
        for f in files
        if f.is_relative_to(ROOT / "lookalike") or f.is_relative_to(ROOT / "bench")
    )  # incl. __main__


def uncommitted_code() -> list[str]:
    """Files of the code that ran that differed from the start commit when the benchmark started."""
    return sorted(_START_DIRTY & set(imported_code()))


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def commit_stamp() -> str:
    """``commit abc1234`` (checked out when the benchmark started), plus the files of the code that ran that differed
    from it then, and a note if HEAD moved during the run."""
    dirty = uncommitted_code()
    out = f"commit {_START_REV}" + (f" plus uncommitted changes to {', '.join(dirty)}" if dirty else "")
    end = git_rev()
    if end != _START_REV:
        changed = [f for f in _git("diff", "--name-only", _START_REV, end, "--", *imported_code()) if f]
        out += f" (HEAD moved to {end} during the run, " + (
            f"changing {', '.join(changed)})" if changed else "changing none of the code that ran)"
        )
    return out


Settings = dict[str, object] | str | None


def format_settings(settings: Settings) -> str:
    if not settings:
        return ""
    if isinstance(settings, str):
        return settings
    return "; ".join(f"{k} {v}" for k, v in settings.items())


def index_settings(meta: dict[str, object]) -> dict[str, object]:
    """Model, pooling and resolution as an index's meta.json records them (what a run really used)."""
    model = meta.get("model")
    pooling = meta.get("pooling")
    return {
        "model": model.get("name", "?") if isinstance(model, dict) else model,
        "pooling": pooling.get("name", "?") if isinstance(pooling, dict) else pooling,
        "resolution": f"{meta.get('resolution')} px",
    }


def write_section(name: str, body: str, settings: Settings = None, *, measured: bool = True) -> None:
    """Replace section ``name`` of BENCHMARKS.md with ``body`` and a footer: date, machine, commit, command, settings.

    ``measured=False`` when the run only rewrote the text from stored results: the footer then says so (the body must
    date what it shows)."""
    command = " ".join(["python -m", f"bench.{name}", *sys.argv[1:]])
    footer = (
        f"_Measured {now_stamp()} on {machine()} ({load_note()}), {commit_stamp()}; `{command}`._"
        if measured
        else f"_Rewritten {now_stamp()} from stored results, nothing re-measured (the dates and commits of the "
        f"results are given above), {commit_stamp()}; `{command}`._"
    )
    if settings:
        footer += f"\n_Settings: {format_settings(settings)}._"
    block = f"<!-- BEGIN {name} -->\n{body.rstrip()}\n\n{footer}\n<!-- END {name} -->"
    text = (
        BENCH_FILE.read_text()
        if BENCH_FILE.exists()
        else "# Benchmarks\n\nEach section is written by the script it names.\n"
    )
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = BENCH_FILE.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(BENCH_FILE)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
