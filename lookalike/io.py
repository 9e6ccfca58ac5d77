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


def now_iso() -> str:
    """UTC time to the second, as written in every header and card lookalike keeps."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()
