"""The server's one freshness rule: a cached value is made again when one of its files changes, appears or goes."""

from __future__ import annotations

from pathlib import Path

from lookalike.io import atomic_write
from lookalike.server.stamped import Stamped, file_stamp


def test_a_value_is_made_again_only_when_a_source_changes(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    made: list[int] = []

    def make() -> int:
        made.append(1)
        return len(made)

    cache = Stamped(make, a, b)
    assert file_stamp(a) == () and cache.get() == 1 and cache.get() == 1  # missing files are a stamp too
    atomic_write(a, "1")
    assert cache.get() == 2 and cache.get() == 2
    atomic_write(a, "2")  # rewritten within the same mtime tick: a new inode all the same
    assert cache.get() == 3
    atomic_write(b, "x")
    assert cache.get() == 4
    b.unlink()
    assert cache.get() == 5 and len(made) == 5
