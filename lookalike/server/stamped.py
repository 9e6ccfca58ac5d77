"""One freshness rule for what the server caches: a value made from files, made again when any file's stamp
changes (the clusters reply and its contact sheets, the duplicates plan, the map)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
Stamp = tuple[tuple[int, ...], ...]


def file_stamp(path: Path) -> tuple[int, ...]:
    """(inode, mtime ns, size) of a file, () when it is missing: every atomic rewrite is a new inode, so a file
    rewritten within one mtime tick still reads as changed."""
    try:
        st = path.stat()
    except OSError:
        return ()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class Stamped(Generic[T]):
    """``make()`` cached until the stamp of one of ``sources`` changes; thread-safe (one maker at a time)."""

    def __init__(self, make: Callable[[], T], *sources: Path) -> None:
        self._make = make
        self.sources = sources
        self._held: tuple[Stamp, T] | None = None
        self._lock = threading.Lock()

    def stamp(self) -> Stamp:
        return tuple(file_stamp(p) for p in self.sources)

    def get(self) -> T:
        stamp = self.stamp()
        with self._lock:
            if self._held is None or self._held[0] != stamp:
                self._held = (stamp, self._make())
            return self._held[1]
