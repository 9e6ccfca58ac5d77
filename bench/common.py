"""Shared helpers for benchmarks: the data folder, and indexes of it built once and reused by every benchmark."""

from __future__ import annotations

import fcntl
import json
import re
import sys
from pathlib import Path
from typing import Any

from bench.report import SHARED

CACHE = Path("/tmp/lookalike-cache")


def dataset(name: str) -> Path:
    """A folder of ../shared/data, or exit with a clear message when this checkout has none."""
    path = SHARED / name
    if not path.is_dir():
        sys.exit(f"benchmark data not found: {path} (benchmarks need ../shared/data beside the project)")
    return path


def shared_index(name: str, **build_kwargs: Any):  # noqa: ANN201
    """``Index.build(../shared/data/<name>, ...)`` cached under /tmp/lookalike-cache, keyed by the build options.

    Building is incremental, so a second call (from any benchmark) only checks the files; a file lock keeps two
    benchmarks from building the same index at once.
    """
    from lookalike.index import Index

    key = re.sub(r"[^A-Za-z0-9_.=-]+", "_", json.dumps(build_kwargs, sort_keys=True))
    path = CACHE / f"index-{name}-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{path.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        build_kwargs.setdefault("labels", "folders")
        # the figures recorded before int8 became the default are fp32, and so are the cached indexes they came
        # from: a benchmark that wants int8 asks for it (and gets its own cache entry)
        build_kwargs.setdefault("precision", "fp32")
        return Index.build(dataset(name), path, progress=False, **build_kwargs)
