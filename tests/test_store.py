"""The index folder: update planning (a pure function), labels from paths, the table of files, commit and reopen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lookalike.errors import IndexMissingError, LookalikeError
from lookalike.store import (
    INDEX_FILES,
    META_FILE,
    TABLE_FILE,
    Store,
    make_table,
    plan_update,
    with_labels,
)


def test_plan_keeps_unchanged_embeds_new_and_changed_drops_gone() -> None:
    plan = plan_update(
        on_disk={"same.jpg": (10, 1), "new.jpg": (5, 2), "changed.jpg": (11, 3)},
        indexed={"same.jpg": (10, 1, "h1"), "changed.jpg": (10, 1, "h2"), "gone.jpg": (7, 1, "h3")},
    )
    assert plan.keep == ["same.jpg"]
    assert sorted(plan.embed) == ["changed.jpg", "new.jpg"]
    assert plan.removed == ["gone.jpg"]
    # a changed file carries its old hash: if only its mtime moved, its vector is reused, not recomputed
    assert plan.known_hashes == {"changed.jpg": "h2"}
    assert plan.resume == [] and plan.skip_again == []


def test_plan_resumes_checkpointed_rows_and_does_not_retry_unchanged_bad_files() -> None:
    plan = plan_update(
        on_disk={"a.jpg": (1, 1), "b.jpg": (2, 2), "bad.jpg": (3, 3), "bad-fixed.jpg": (4, 5)},
        indexed={},
        resumable={"a.jpg": (1, 1), "b.jpg": (2, 9)},  # b changed after it was checkpointed
        skipped={"bad.jpg": (3, 3), "bad-fixed.jpg": (4, 4)},
    )
    assert plan.resume == ["a.jpg"]
    assert plan.skip_again == ["bad.jpg"]
    assert sorted(plan.embed) == ["b.jpg", "bad-fixed.jpg"]


def test_plan_of_an_unchanged_folder_embeds_nothing() -> None:
    files = {f"{i}.jpg": (i, i) for i in range(50)}
    plan = plan_update(files, {n: (*s, f"h{n}") for n, s in files.items()})
    assert len(plan.keep) == 50 and not plan.embed and not plan.removed


def _table(paths: list[str], dim: int = 4):  # noqa: ANN202
    rows = [{"path": p, "size": 1, "mtime_ns": 1, "hash": p, "label": "stale"} for p in paths]
    return make_table(rows, np.eye(len(paths), dim, dtype=np.float32), dim)


def test_labels_follow_paths_by_the_one_rule() -> None:
    table = with_labels(_table(["Kitchen/a.jpg", "Kitchen/2019/b.jpg", "c.jpg"]), "folders")
    assert table.column("label").to_pylist() == ["Kitchen", "Kitchen", None]
    assert with_labels(table, "none").column("label").to_pylist() == [None, None, None]


def test_commit_and_reopen(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "idx", {"root": "..", "labels": "folders", "dim": 4})
    store.commit(_table(["b.jpg", "a.jpg"]), [{"path": "x.jpg", "reason": "corrupt"}])
    again = Store.open(tmp_path / "idx")
    assert again.column("path") == ["a.jpg", "b.jpg"]  # kept sorted by path
    assert again.vectors.shape == (2, 4) and again.skipped[0]["reason"] == "corrupt"
    assert json.loads((tmp_path / "idx" / META_FILE).read_text())["count"] == 2
    assert not list((tmp_path / "idx").glob(".*.tmp"))  # no temporary file left behind


def test_every_file_written_is_in_the_table(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "idx", {"root": "..", "labels": "folders", "dim": 4})
    with store.lock():
        store.write_part(_table(["a.jpg"]))
        store.commit(_table(["a.jpg"]), [])
    assert {p.name for p in store.path.iterdir()} <= set(INDEX_FILES)
    assert TABLE_FILE in INDEX_FILES and all(owner.startswith("lookalike.") for owner, _ in INDEX_FILES.values())


def test_missing_or_damaged_index_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IndexMissingError, match="no lookalike index"):
        Store.open(tmp_path)
    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(LookalikeError, match="unreadable index header"):
        Store.open(tmp_path)


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "idx", {"root": "..", "labels": "folders", "dim": 4})
    store.commit(_table(["a.jpg"]), [])
    other = Store.open(tmp_path / "idx")
    with store.lock(), pytest.raises(LookalikeError, match="being updated by another"), other.lock():
        pass


def test_names_that_are_not_utf8_round_trip_through_the_table(tmp_path: Path) -> None:
    import os

    odd = os.fsdecode(b"K\xfcche/\xff.jpg")  # Latin-1 folder, undecodable file
    rows = [{"path": odd, "size": 1, "mtime_ns": 2, "hash": "h"}, {"path": "Küche/a.jpg", "size": 3, "mtime_ns": 4}]
    store = Store.create(tmp_path / "idx", {"root": "..", "dim": 2})
    store.commit(with_labels(make_table(rows, np.eye(2, dtype=np.float32), 2), "folders"), [])
    again = Store.open(tmp_path / "idx")
    assert sorted(again.names()) == sorted([odd, "Küche/a.jpg"])
    assert set(again.column("path")) == {"K\ufffdche/\ufffd.jpg", "Küche/a.jpg"}  # readable, valid UTF-8
    assert set(again.column("label")) == {"K\ufffdche", "Küche"}
    assert again.column("path_bytes")[again.names().index(odd)] == b"K\xfcche/\xff.jpg"


def test_an_index_written_before_path_bytes_still_opens_and_updates(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    store = Store.create(tmp_path / "idx", {"root": "..", "dim": 2})
    rows = [{"path": "a/x.jpg", "size": 1, "mtime_ns": 2, "hash": "h"}]
    store.commit(make_table(rows, np.ones((1, 2), np.float32), 2), [])
    table = pq.read_table(tmp_path / "idx" / TABLE_FILE).drop_columns(["path_bytes"])  # the old schema
    pq.write_table(table, tmp_path / "idx" / TABLE_FILE)
    old = Store.open(tmp_path / "idx")
    assert old.names() == ["a/x.jpg"] and "path_bytes" in old.table.column_names
    old.write_part(table)  # a checkpoint of the old schema is still picked up
    assert old.read_parts() is not None and old.read_parts().num_rows == 1
    old.commit(old.table, [])
    assert Store.open(tmp_path / "idx").names() == ["a/x.jpg"]


def test_vectors_of_another_recipe_are_never_read_under_a_new_header(tmp_path: Path) -> None:
    """Found by bench/crashpoints.py: `vocab fit` killed after its new meta.json (VLAD, 4x wider) was written but
    before the table was re-embedded opened 24 images as 6 garbage vectors. A rebuild now removes the old table first,
    and a table whose width is not the header's is refused with one line."""
    store = Store.create(tmp_path / "idx", {"root": "..", "labels": "folders", "dim": 4})
    store.commit(_table(["b.jpg", "a.jpg"]), [])
    meta = json.loads((tmp_path / "idx" / META_FILE).read_text())
    (tmp_path / "idx" / META_FILE).write_text(json.dumps({**meta, "dim": 8}))
    with pytest.raises(LookalikeError, match="vectors of 4 numbers where the header says 8") as err:
        Store.open(tmp_path / "idx")
    assert "\n" not in str(err.value)
    store.discard_table()
    assert len(Store.open(tmp_path / "idx")) == 0
