"""A live collection: commit ids, snapshot reads while the index changes, moves by content hash, the watcher."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np

from lookalike import Index, build
from lookalike.store import Store, commit_of, read_parquet, table_commit


def test_every_commit_bumps_the_id_in_header_and_table(photos: Path, tmp_path: Path) -> None:
    index = Index.build(photos, tmp_path / "idx", labels="folders")
    first = commit_of(tmp_path / "idx")
    assert first >= 1 and index.store.commit_id == first
    assert table_commit(read_parquet(tmp_path / "idx" / "images.parquet")) == first
    (photos / next(iter(sorted(p.name for p in photos.iterdir() if p.is_dir()))) / "new.jpg").write_bytes(
        next(photos.rglob("*.jpg")).read_bytes()[:-10] + b"\xff\xd9" * 5
    )
    index.update()
    assert commit_of(tmp_path / "idx") > first


def test_moved_and_renamed_files_keep_their_vectors_without_embedding(photos: Path, tmp_path: Path) -> None:
    index = Index.build(photos, tmp_path / "idx", labels="folders")
    before = dict(zip(index.hashes, index.vectors, strict=True))
    files = sorted(p for p in photos.rglob("*.jpg"))[:10]
    (photos / "elsewhere").mkdir()
    for i, f in enumerate(files):
        f.rename(photos / "elsewhere" / f"renamed-{i}.jpg")
    report = index.update()
    assert report.embedded == 0 and report.moved == 10 and report.removed == 10
    assert len(index) == 24
    moved = [i for i, n in enumerate(index.names) if n.startswith("elsewhere/")]
    assert len(moved) == 10 and {index.labels[i] for i in moved} == {"elsewhere"}
    for i in range(len(index)):
        np.testing.assert_array_equal(index.vectors[i], before[index.hashes[i]])


def test_a_reader_opening_during_updates_always_sees_one_commit(photos: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    Index.build(photos, idx, labels="folders")
    spare = tmp_path / "spare"
    shutil.move(str(photos / sorted(p.name for p in photos.iterdir())[0]), spare)
    stop = threading.Event()
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                store = Store.open(idx)
                seen.append((store.commit_id, len(store)))
                assert store.meta["count"] == len(store)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(3):
            shutil.move(str(spare), photos / spare.name)
            build.main(photos, idx)
            shutil.move(str(photos / spare.name), spare)
            build.main(photos, idx)
    finally:
        stop.set()
        reader.join()
    assert not errors
    counts = {}
    for commit, n in seen:
        assert counts.setdefault(commit, n) == n  # one commit, one table
    assert len(counts) >= 2
