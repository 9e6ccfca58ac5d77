"""Writing files so that a crash or power cut leaves the old version or the new one, never half of either.

Every file lookalike writes (index tables, headers, heads, vocabularies, cluster lists, model cards, caches) goes
through :func:`atomic_write`: a temporary file in the same folder, flushed and fsynced, renamed over the target,
then the folder itself fsynced so the rename survives a power cut. A rename alone is not enough: without the first
fsync the new name can point at a zero-length file after a crash, and without the second the old name can come
back.

Crash-point testing (``bench/crashpoints.py``, ``tests/test_crashpoints.py``) hooks in here: every write is two
steps, "written" (the temporary file complete and fsynced) and "renamed" (in place, before the folder fsync); with
``LOOKALIKE_CRASH_AT=N`` in the environment the process kills itself with SIGKILL at step N, and
``LOOKALIKE_WRITE_TRACE=FILE`` appends one line per step to FILE. Without them the hook costs one dict lookup.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename inside ``folder`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_STARTED = time.time()


def remove_stale_temps(folder: str | os.PathLike[str], name: str = "*") -> int:
    """Delete the temporary files that writes of ``name`` (all files: ``*``) left in ``folder`` when their process
    was killed, so a crash costs no disk space forever. Only files older than this process are touched: a temporary
    file of a writer running now, in another process, is younger, and is left alone."""
    removed = 0
    for tmp in Path(folder).glob(f".{name}.*.tmp"):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < _STARTED:
                tmp.unlink()
                removed += 1
    return removed


CRASH_AT_ENV = "LOOKALIKE_CRASH_AT"
WRITE_TRACE_ENV = "LOOKALIKE_WRITE_TRACE"
_steps = 0
_steps_lock = threading.Lock()


def _step(what: str, path: Path) -> None:
    """The crash-point hook: count this write step, trace it, and die here if this is the step asked for."""
    at, trace = os.environ.get(CRASH_AT_ENV), os.environ.get(WRITE_TRACE_ENV)
    if not at and not trace:
        return
    global _steps
    with _steps_lock:
        _steps += 1
        step = _steps
        if trace:
            with open(trace, "a") as fh:
                fh.write(f"{step} {what} {path}\n")
        if at and step == int(at):
            os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path: str | os.PathLike[str], data: bytes | str | Callable[[Path], object]) -> Path:
    """Write ``data`` to ``path`` atomically and durably; returns ``path``.

    ``data`` is the content (bytes, or text written as UTF-8), or a function that writes the file at the temporary
    path it is given (for writers that want a file name: Parquet, ``np.savez``, ``torch.save``, an ONNX export).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode() if isinstance(data, str) else data)
                fh.flush()
                os.fsync(fh.fileno())
        _step("written", path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _step("renamed", path)
    fsync_dir(path.parent)
    remove_stale_temps(path.parent, glob.escape(path.name))
    return path


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """:func:`atomic_write` of ``obj`` as indented, key-sorted JSON (stable diffs, readable by people)."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# --- folders lookalike writes, recognised wherever photos are looked for ------------------------------------------

EXPORT_MARKER = ".lookalike-export.json"
"""In a cluster export folder (lookalike.cluster.export): what the last export wrote there."""
REPORT_MARKER = ".lookalike-report.json"
"""In an evaluation report folder (lookalike.evaluate.write_report): what wrote it and when."""
INDEX_SIGNATURE = ("meta.json", "images.parquet")
"""An index folder holds both (lookalike.store names them META_FILE and TABLE_FILE)."""


def written_by_lookalike(folder: str | os.PathLike[str]) -> str | None:
    """Why ``folder`` is lookalike's own output (its copies and contact sheets must never come back as photos), or
    None for a folder of the user's."""
    folder = Path(folder)
    if (folder / EXPORT_MARKER).is_file():
        return "a lookalike cluster export"
    if (folder / REPORT_MARKER).is_file():
        return "a lookalike evaluation report"
    if all((folder / name).is_file() for name in INDEX_SIGNATURE):
        return "a lookalike index folder"
    return None


# --- file names that are not valid UTF-8 --------------------------------------------------------------------------
# Python hands such names over as strings with lone surrogates (PEP 383 "surrogateescape"): exact, since they encode
# back to the bytes on disk, but not encodable as UTF-8, so Parquet, JSON for other programs and the terminal refuse
# them. Inside lookalike names stay exact; these functions are the boundary.


def name_bytes(name: str) -> bytes | None:
    """The bytes on disk of a name that is not valid UTF-8, or None for an ordinary name (stored as it is)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name)
    return None


def name_from(text: str, raw: bytes | None) -> str:
    """The exact name back from what :func:`shown` and :func:`name_bytes` stored."""
    return os.fsdecode(raw) if raw is not None else text


def shown(name: str) -> str:
    """A name as people and UTF-8 consumers see it: undecodable bytes become U+FFFD (the name itself is unchanged
    when it is valid UTF-8)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (not from a file system, but never crash)
        raw = name.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def shown_json(obj: Any) -> Any:
    """``obj`` with every string (keys too) passed through :func:`shown`: JSON printed or served is valid UTF-8."""
    if isinstance(obj, str):
        return shown(obj)
    if isinstance(obj, dict):
        return {shown(k) if isinstance(k, str) else k: shown_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [shown_json(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return shown(os.fspath(obj))  # type: ignore[arg-type]
    return obj


def now_iso() -> str:
    """UTC time to the second, as written in every header and card lookalike keeps."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()
