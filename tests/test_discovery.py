"""Folders as real disks hold them: pipes, dangling links, loops, names that are not UTF-8, lookalike's own output.

The end-to-end test runs `lookalike index` in a subprocess with a time limit, so a read that blocks (a named pipe
opened for reading waits for a writer forever) fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lookalike.errors import ImageError
from lookalike.images import discover, read_file
from lookalike.io import EXPORT_MARKER, REPORT_MARKER, shown

ODD = os.fsdecode(b"\xff\xfe odd.jpg")  # bytes that are not UTF-8, as FAT cards and old archives have
ODD_SHOWN = "\ufffd\ufffd odd.jpg"

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")


def hostile(sample_dir: Path, sample_queries: Path, root: Path) -> Path:
    """The sample photos plus everything that broke indexing: returns the photo folder."""
    shutil.copytree(sample_dir, root)
    query = sorted(sample_queries.glob("flower*.jpg"))[0]
    shutil.copy(query, root / "flower" / ODD)  # a distinct flower photo under an undecodable name
    os.mkfifo(root / "temple" / "x.jpg")
    (root / "y.jpg").symlink_to("/nonexistent/y.jpg")
    (root / "loop.jpg").symlink_to("loop.jpg")
    (root / "z.jpg").mkdir()
    (root / "empty.jpg").write_bytes(b"")
    (root / "clip.mov").write_bytes(b"not a photo")
    (root / "CLIP2.MOV").write_bytes(b"not a photo")
    (root / "notes.txt").write_text("hello")
    return root


def lookalike(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[bytes]:
    """The CLI as a user runs it, in a subprocess: a hang is a TimeoutExpired, i.e. a failed test."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    code = "from lookalike.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, timeout=timeout, env=env, check=False
    )


# --- discovery alone (no model) ----------------------------------------------------------------------------------


def test_discover_accounts_for_every_entry_without_opening_any(sample_dir: Path, sample_queries: Path, tmp_path: Path):
    root = hostile(sample_dir, sample_queries, tmp_path / "photos")
    found = discover(root)
    rel = {p.relative_to(root).as_posix(): why for p, why in found.skipped}
    assert rel == {
        "temple/x.jpg": "not a regular file (named pipe)",
        "y.jpg": "dangling symbolic link (its target is missing)",
        "loop.jpg": "symbolic link loop",
    }
    names = [p.relative_to(root).as_posix() for p in found.files]
    assert f"flower/{ODD}" in names and "empty.jpg" in names  # regular files: decoding judges the empty one
    assert "z.jpg" not in names and not any(n.startswith("z.jpg") for n in rel)  # a folder named .jpg is a folder
    assert dict(found.ignored) == {".mov": 2, ".txt": 1}
    assert found.seen == len(list(sample_dir.rglob("*.jpg"))) + 2 + 3
    assert set(found.stats) == set(found.files)


def test_read_file_refuses_a_pipe_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    outcome: list[BaseException | bytes] = []

    def read() -> None:
        try:
            outcome.append(read_file(fifo))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # unblock the reader so the daemon thread ends, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("read_file blocked on a named pipe")
    assert isinstance(outcome[0], ImageError) and "named pipe" in str(outcome[0])


@pytest.mark.parametrize(
    ("marker", "why"),
    [
        (EXPORT_MARKER, "a lookalike cluster export"),
        (REPORT_MARKER, "a lookalike evaluation report"),
        ("meta.json+images.parquet", "a lookalike index folder"),
    ],
)
def test_folders_lookalike_wrote_are_left_out(sample_dir: Path, tmp_path: Path, marker: str, why: str) -> None:
    root = tmp_path / "photos"
    shutil.copytree(sample_dir, root)
    out = root / "output"
    shutil.copytree(sample_dir / "temple", out / "cluster_0001")
    for name in marker.split("+"):
        (out / name).write_text("{}")
    found = discover(root)
    assert found.left_out == [(out, why)]
    assert not any(out in p.parents for p in found.files)
    assert len(found.files) == len(list(sample_dir.rglob("*.jpg")))


# --- end to end --------------------------------------------------------------------------------------------------


def test_hostile_folder_indexes_in_time_and_odd_name_is_searchable_and_exportable(
    sample_dir: Path, sample_queries: Path, tmp_path: Path
) -> None:
    from lookalike import Index
    from lookalike.cluster import export_clusters

    root = hostile(sample_dir, sample_queries, tmp_path / "photos")
    run = lookalike("index", str(root), "--quiet")
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    summary = run.stderr.decode("utf-8")
    n = len(list(sample_dir.rglob("*.jpg")))
    assert f"indexed {n + 5} image files" in summary and f"{n + 1} added" in summary and "4 skipped" in summary
    assert "ignored (not images): 2 .mov, 1 .txt" in summary

    idx = Index.open(root)
    skipped = dict(idx.report.skipped if idx.report else ((s["path"], s["reason"]) for s in idx.store.skipped))
    assert set(skipped) == {"temple/x.jpg", "y.jpg", "loop.jpg", "empty.jpg"}
    assert skipped["empty.jpg"] == "empty file (0 bytes)"
    assert len(idx) + len(skipped) == n + 5  # every entry accounted for
    odd = f"flower/{ODD}"
    assert odd in idx.names
    i = idx.names.index(odd)
    assert idx.store.column("path")[i] == f"flower/{ODD_SHOWN}"  # the readable form beside the exact bytes

    # searchable: from the odd file itself (read by its exact name) and as a match of the other flowers
    hits = idx.search(root / odd, k=3)
    assert hits and all(h.name != odd for h in hits) and hits[0].label == "flower"
    found = [m for m in idx.search(root / "flower" / "flower_00.jpg", k=len(idx)) if m.name == odd]
    assert found and Path(found[0].path).read_bytes() == (root / odd).read_bytes()
    from lookalike.plots import result_grid  # a figure draws the readable form (fonts refuse the escapes)

    grid = result_grid(idx.search_many([root / "flower" / "flower_00.jpg"], k=len(idx)), tmp_path / "grid.png")
    assert grid.stat().st_size > 0

    # exportable: the copy keeps the exact name
    out = tmp_path / "export"
    export_clusters({"clusters": [{"id": 1, "size": 1, "paths": [odd], "gps": None}], "noise": []}, root, out)
    assert (out / "cluster_0001" / odd).read_bytes() == (root / odd).read_bytes()
    listed = json.loads((out / "clusters.json").read_text(encoding="utf-8"))  # readable, valid UTF-8
    assert listed["clusters"][0]["paths"] == [f"flower/{ODD_SHOWN}"]

    # JSON stays valid UTF-8 and shows the name readably
    info = json.loads(lookalike("info", "--index", str(root), "--json").stdout.decode("utf-8"))
    assert {s["path"] for s in info["skipped"]} == set(skipped)
    assert info["ignored"] == {".mov": 2, ".txt": 1}
    res = lookalike(
        "search", str(root / "flower" / "flower_00.jpg"), "--index", str(root), "-k", str(len(idx)), "--json"
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    names = [m["name"] for m in json.loads(res.stdout.decode("utf-8"))["matches"]]
    assert f"flower/{ODD_SHOWN}" in names

    # the next run keeps everything (the odd name must not break the update) and re-opens nothing that is no file
    again = lookalike("index", str(root), "--quiet")
    assert again.returncode == 0, again.stderr.decode(errors="replace")
    assert f"{n + 1} unchanged" in again.stderr.decode("utf-8")


def test_export_next_to_the_photos_is_not_reindexed(sample_dir: Path, tmp_path: Path) -> None:
    from lookalike import Index
    from lookalike.cluster import cluster_index, export_clusters

    root = tmp_path / "photos"
    shutil.copytree(sample_dir, root)
    idx = Index.build(root)
    export_clusters(cluster_index(idx), root, root / "exported")
    assert list((root / "exported").rglob("*.jpg"))
    again = Index.build(root)
    assert len(again) == len(idx) and again.report is not None and again.report.added == 0
    assert again.report.left_out == [("exported", "a lookalike cluster export")]
    assert again.info()["left_out"] == [{"path": "exported", "reason": "a lookalike cluster export"}]


def test_file_vanishing_between_discovery_and_reading_is_skipped_with_a_reason(
    sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lookalike.build as index_module
    from lookalike import Index

    root = tmp_path / "photos"
    shutil.copytree(sample_dir, root)
    doomed = sorted((root / "temple").glob("*.jpg"))[0]
    real = index_module.discover

    def discover_then_delete(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        found = real(*args, **kwargs)
        doomed.unlink()
        return found

    monkeypatch.setattr(index_module, "discover", discover_then_delete)
    idx = Index.build(root)
    n = len(list(sample_dir.rglob("*.jpg")))
    assert idx.report is not None and idx.report.total == n
    assert dict(idx.report.skipped) == {f"temple/{doomed.name}": "cannot read (no such file)"}
    assert len(idx) == n - 1


def test_shown_is_readable_and_exact_names_round_trip() -> None:
    from lookalike.io import name_bytes, name_from

    assert shown(ODD) == ODD_SHOWN and shown("Küche/a.jpg") == "Küche/a.jpg"
    assert name_bytes("Küche/a.jpg") is None
    assert name_from(shown(ODD), name_bytes(ODD)) == ODD and os.fsencode(ODD) == b"\xff\xfe odd.jpg"
