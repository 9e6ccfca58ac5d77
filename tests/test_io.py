"""One atomic_write: the old file or the new one, never half; durable (file and folder fsynced); no litter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lookalike.io import atomic_write, atomic_write_json


def test_writes_bytes_text_json_and_through_a_writer(tmp_path: Path) -> None:
    atomic_write(tmp_path / "a.bin", b"\x00\x01")
    atomic_write(tmp_path / "sub" / "b.txt", "héllo")
    atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [1, 2]})
    atomic_write(tmp_path / "d.dat", lambda tmp: Path(tmp).write_bytes(b"via writer"))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "c.json").read_text().startswith('{\n  "a"')
    assert (tmp_path / "d.dat").read_bytes() == b"via writer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "c.json", "d.dat", "sub"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write(target, "old")

    def broken(tmp: Path) -> None:
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_file_and_folder_are_fsynced_before_and_after_the_rename(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real_fsync(fd)

    def replace(a, b) -> None:  # noqa: ANN001
        events.append("rename")
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write(tmp_path / "x", b"data")
    atomic_write(tmp_path / "y", lambda tmp: Path(tmp).write_bytes(b"data"))
    assert events == ["file", "rename", "dir", "file", "rename", "dir"]
