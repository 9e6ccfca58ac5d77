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


# Every section of BENCHMARKS.md, in the order a reader meets them: (part, [(section name, title), ...]). The name is
# the bench that writes it (``python -m bench.<name>``, or the name it passes to ``write_section``); the title names
# the measurement. ``write_section`` puts each section at its place, titles it from here and rewrites the contents.
PARTS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "Describing and indexing",
        [
            ("descriptors", "Descriptors: pooling × resolution × PCA-whitening"),
            ("quantize", "int8 against fp32: speed and quality of the backbone"),
            ("indexing", "Indexing throughput: 3,633 room photos"),
            ("indexing-400", "Indexing throughput: 400 photos"),
            ("formats", "Phone and camera formats: HEIC, AVIF, RAW"),
            ("startup", "Start-up: a command from the shell"),
        ],
    ),
    (
        "Search",
        [
            ("scale", "Large indexes: exact and approximate search"),
            ("scale_mix", "Approximate search on 1,000,000 tightly clustered vectors"),
            ("explore", "Search filters and the map"),
        ],
    ),
    (
        "Classification and learned embeddings",
        [
            ("classify", "Room classification: kNN, linear probe, MLP"),
            ("suspects", "Label suspects"),
            ("leaks", "Leak check: copies across train and test"),
            ("train", "Learned embeddings (lookalike train)"),
            ("train_step", "Fine-tuning step time: glibc defaults vs kept heap memory"),
        ],
    ),
    (
        "Clusters, places and duplicates",
        [
            ("cluster", "Clustering and near-duplicate groups"),
            ("places", "Places: geometric verification with local features"),
            ("library", "Phone-size collection: index, local features, verified clusters"),
            ("library_city", "City-size collection: 11,300 phone-size photos"),
            ("library_upright", "Upright SIFT on the phone-size collection"),
            ("library_awkward", "Awkward phone files: panoramas, CMYK, truncated, depth maps"),
            ("uniqueness", "Uniqueness: redundant and isolated images"),
            ("orientations", "Rotated and mirrored copies"),
            ("dedupe_actions", "Acting on duplicates: plan, apply, undo, new"),
            ("dedupe_formats", "Keepers by format: camera originals, RAW+JPEG, reference folders"),
        ],
    ),
    (
        "Shelf scenes",
        [
            ("scenes", "Packed shelf scenes"),
        ],
    ),
    (
        "Scaling out and live collections",
        [
            ("ray_engine", "Ray engine vs local engine"),
            ("watch", "Watching a folder: new, moved and deleted photos"),
        ],
    ),
    (
        "Server and robustness",
        [
            ("server_load", "Web API under load"),
            ("soak", "Soak: search clients for 30 minutes"),
            ("api_fuzz", "API schema fuzzing (schemathesis)"),
            ("fuzz", "Fuzzing the decoders (atheris)"),
            ("crashpoints", "Crash points: a kill at every write"),
        ],
    ),
    (
        "Code changes",
        [
            ("parity", "Before and after a restructuring: vectors, accuracy, search overhead, indexing"),
        ],
    ),
]
TITLES = {name: title for _, sections in PARTS for name, title in sections}
_INTRO = """# Benchmarks

Each section is written by the bench it names (`python -m bench.<name>`) and ends with the date, machine, load and
commit it was measured at, the command line and its settings. Speed is compared as ratios measured side by side in
one run, since this machine's CPU speed changes between sessions. Sections come in a fixed order, set in
`bench/report.py` (`PARTS`), which also writes this table of contents. The default input resolution became 320 px
after the descriptors table (GeM at 320 px: +4.7 points of room kNN accuracy over mean at 224 px); rows that say
224 px were measured on 224 px indexes.
"""
_BLOCK = re.compile(r"<!-- BEGIN (?P<name>[\w.-]+) -->\n(?P<body>.*?)\n?<!-- END (?P=name) -->", re.S)
_ISSUE_REF = re.compile(r"\s*\((?:issues?|issue) [\d, ]+\)|[;,] issues? [\d, ]+(?=\))")


def slug(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def _normalise(name: str, body: str) -> str:
    """The section's own title as its one ``##`` heading; headings inside it at ``###``, without issue numbers (a
    reader cannot follow them)."""
    lines = body.strip("\n").splitlines()
    if lines and lines[0].startswith("#"):
        lines = lines[1:]
    out, fenced = [], False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            line = "### " + _ISSUE_REF.sub("", line.lstrip("#").strip())
        out.append(line)
    title = TITLES.get(name, name)
    return f"## {title}\n\n" + "\n".join(out).strip("\n")


def layout(text: str) -> str:
    """BENCHMARKS.md with every section titled and placed by ``PARTS`` and the table of contents made anew; sections
    no part names (a new bench not yet placed) come last, under their own name."""
    blocks = {m["name"]: m["body"] for m in _BLOCK.finditer(text) if m["name"] != "toc"}
    order = [name for _, sections in PARTS for name, _ in sections if name in blocks]
    order += sorted(set(blocks) - set(order))
    toc = []
    for part, sections in PARTS:
        present = [(n, t) for n, t in sections if n in blocks]
        if present:
            toc.append(f"- **{part}**: " + " · ".join(f"[{t}](#{slug(t)})" for n, t in present))
    toc += [f"- [{n}](#{slug(n)})" for n in order if n not in TITLES]
    parts = [_INTRO, "<!-- BEGIN toc -->\n" + "\n".join(toc) + "\n<!-- END toc -->"]
    parts += [f"<!-- BEGIN {n} -->\n{_normalise(n, blocks[n])}\n<!-- END {n} -->" for n in order]
    return "\n\n".join(p.strip("\n") for p in parts) + "\n"


def write_section(name: str, body: str, settings: Settings = None, *, measured: bool = True) -> None:
    """Replace section ``name`` of BENCHMARKS.md with ``body`` and a footer: date, machine, commit, command, settings.

    ``measured=False`` when the run only rewrote the text from stored results: the footer then says so (the body must
    date what it shows). The section's heading comes from ``PARTS``, whatever heading ``body`` starts with."""
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
    text = BENCH_FILE.read_text() if BENCH_FILE.exists() else _INTRO
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = BENCH_FILE.with_suffix(".md.tmp")
    tmp.write_text(layout(text))
    tmp.replace(BENCH_FILE)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m bench.report: lay BENCHMARKS.md out again (order, titles, contents), no re-run
    BENCH_FILE.write_text(layout(BENCH_FILE.read_text()))
