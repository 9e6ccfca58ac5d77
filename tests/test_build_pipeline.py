"""The write pipeline (lookalike.build): each step called on its own, the whole run, and vectors byte-identical to
describing the files directly."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lookalike import build
from lookalike.config import IndexConfig, RunOptions
from lookalike.errors import IndexMismatchError, LookalikeError
from lookalike.store import Store


def test_each_step_of_a_build_can_be_called_on_its_own(photos: Path, tmp_path: Path) -> None:
    settled = build.settle(photos, tmp_path / "idx", labels="folders", batch_size=4)
    assert settled.root == photos.resolve() and settled.options.batch_size == 4
    assert settled.asked == {"labels": "folders"}

    store, describer = build.open_store(settled)
    assert len(store) == 0 and store.dim == describer.dim

    found = build.discover_files(store)
    names = sorted(p.relative_to(photos).as_posix() for p in found.files)
    assert len(names) == 24

    with store.lock():
        build.prepare_describer(store, describer, found.files, settled.options)
        planned = build.plan(store, found)
        assert sorted(planned.plan.embed) == names and not planned.plan.keep

        report = build.start_report(found, planned, store.root, None)
        described = build.describe(store, describer, planned, settled.options, report)
        assert report.added == 24 and sum(t.num_rows for t in described.tables) == 24
        assert store.pending_parts() >= 1  # checkpointed before the commit

        build.write(store, planned, described, report)
        assert len(store) == 24 and store.pending_parts() == 0
        assert set(store.column("label")) == {p.split("/")[0] for p in names}

        build.post_steps(store, describer, settled.options)
    assert store.ann is not None and store.ann["index"] == "flat"
    reopened = Store.open(tmp_path / "idx")
    assert len(reopened) == 24 and reopened.label_rule == "folders"


def test_pipeline_vectors_are_byte_identical_to_describing_the_files(photos: Path, tmp_path: Path) -> None:
    built = build.main(photos, tmp_path / "idx", labels="none")
    store, describer = built.store, built.describer
    assert built.report.added == len(store) == 24 and built.report.seconds > 0
    paths = [store.root / n for n in store.names()]
    direct = np.concatenate([b.vectors for b in describer.describe_files(paths)])
    assert direct.dtype == store.vectors.dtype
    assert np.array_equal(direct, store.vectors)


def test_update_embeds_only_what_changed_and_follow_files_drops_rows(photos: Path, tmp_path: Path) -> None:
    built = build.main(photos, tmp_path / "idx")
    store, describer = built.store, built.describer
    first = sorted(photos.rglob("*.jpg"))[0]
    shutil.copy(first, first.with_name("copy.jpg"))
    with store.lock():
        report = build.update(store, describer)
    assert (report.added, report.unchanged, report.removed) == (1, 24, 0)
    gone = first.with_name("copy.jpg").relative_to(photos).as_posix()
    with store.lock():
        assert build.follow_files(store, {gone}) is True
        assert build.follow_files(store, set()) is False  # nothing moved: nothing committed
    assert gone not in store.names() and len(store) == 24


def test_settings_merge_one_way() -> None:
    stored = IndexConfig(pooling={"name": "vlad", "clusters": 16})
    # an existing index: what was asked goes on top of the stored config, same-name pooling keeps its parameters
    assert build.wanted_config(stored, None, {"pooling": "vlad"}).pooling == {"name": "vlad", "clusters": 16}
    assert build.wanted_config(stored, None, {"pooling": "gem"}).pooling == {"name": "gem"}
    # a new index: the config given (else the defaults), then what was asked; None follows what is underneath
    assert build.wanted_config(None, stored, {"pooling": "vlad", "pca": None}).pooling["clusters"] == 16
    assert build.wanted_config(None, None, {"resolution": 224}) == IndexConfig(resolution=224)
    assert build.wanted_config(stored, IndexConfig(labels="none"), {}).labels == "none"


def test_open_store_refuses_other_settings_and_a_missing_folder(photos: Path, tmp_path: Path) -> None:
    build.main(photos, tmp_path / "idx", options=RunOptions(batch_size=8))
    with pytest.raises(IndexMismatchError, match="resolution"):
        build.open_store(build.settle(photos, tmp_path / "idx", resolution=64))
    with pytest.raises(LookalikeError, match="not a folder"):
        build.settle(tmp_path / "nowhere")
