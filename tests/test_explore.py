"""The map of a collection: layouts, the stored map and its staleness, colour codes, the neighbourhood measure."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from lookalike import Index
from lookalike.errors import ConfigError, LookalikeError
from lookalike.explore import (
    TIME_STEPS,
    color_codes,
    compute_map,
    layout_2d,
    load_map,
    neighbour_label_agreement,
)
from lookalike.store import MAP_FILE


@pytest.fixture
def index(sample_index: Index, tmp_path: Path) -> Index:
    """A private copy of the sample index folder (maps are written into it), pointing at the same photos."""
    folder = tmp_path / "idx"
    shutil.copytree(sample_index.store.path, folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["root"] = str(sample_index.root)
    (folder / "meta.json").write_text(json.dumps(meta))
    return Index.open(folder)


def blobs(n_per: int = 40, centres: int = 3, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim)) * 3
    x = np.concatenate([c[i] + rng.normal(size=(n_per, dim)) for i in range(centres)]).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), [f"c{i}" for i in range(centres) for _ in range(n_per)]


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_layouts_keep_groups_apart(method: str) -> None:
    x, labels = blobs()
    xy = layout_2d(x, method)
    assert xy.shape == (len(x), 2) and xy.dtype == np.float32
    assert np.isfinite(xy).all() and xy.min() >= -1e-6 and xy.max() <= 1 + 1e-6
    assert neighbour_label_agreement(xy, labels, k=10) > 0.95


def test_layout_refuses_bad_input() -> None:
    with pytest.raises(ConfigError) as exc:
        layout_2d(np.zeros((5, 4), np.float32), "mds")
    assert exc.value.setting == "method"
    with pytest.raises(LookalikeError, match="at least 3"):
        layout_2d(np.ones((2, 4), np.float32), "pca")


def test_neighbour_agreement_is_chance_for_shuffled_labels() -> None:
    x, labels = blobs(centres=4)
    shuffled = list(np.random.default_rng(1).permutation(labels))
    assert neighbour_label_agreement(x, labels, 10) > 0.95
    assert neighbour_label_agreement(x, shuffled, 10) < 0.45


def test_map_is_stored_reused_and_never_silently_stale(index: Index) -> None:
    assert load_map(index)[0] is None and "lookalike map" in load_map(index)[1]
    made = compute_map(index, "pca", suspects=True)
    assert index.store.file(MAP_FILE).is_file()
    found, why = load_map(index)
    assert why is None and np.array_equal(found.xy, made.xy) and found.method == "pca"
    assert found.info["suspects_checked"] and all(0 <= i < len(index) for i in found.suspects)
    again = compute_map(index, "pca")
    assert again.info["created"] == made.info["created"]  # current: not recomputed
    assert compute_map(index, "pca", force=True).info["created"] >= made.info["created"]
    # the vectors change (an image leaves the index): the stored map is refused, not shown misplaced
    index.store.commit(index.store.table.slice(1))
    reopened = Index.open(index.store.path)
    found, why = load_map(reopened)
    assert found is None and "out of date" in why
    assert len(compute_map(reopened, "pca").xy) == len(reopened)


def test_color_codes(index: Index) -> None:
    codes, legend = color_codes(index, "label")
    assert legend == index.classes
    assert [legend[c - 1] for c in codes] == index.labels
    codes, legend = color_codes(index, "folder")
    assert [legend[c - 1] for c in codes] == [n.rsplit("/", 1)[0] for n in index.names]
    first = [index.names[i] for i in range(0, len(index), 2)]
    clusters = {"clusters": [{"id": 7, "paths": first}], "noise": []}
    codes, legend = color_codes(index, "cluster", clusters)
    assert legend == ["cluster 7"] and [int(c) for c in codes] == [1 - i % 2 for i in range(len(index))]
    assert color_codes(index, "cluster", None)[0].max() == 0
    codes, legend = color_codes(index, "time")  # the sample photos carry no EXIF time
    assert legend == [] and codes.max() == 0
    with pytest.raises(ConfigError):
        color_codes(index, "size")


def test_time_colours_ramp_from_oldest_to_newest(index: Index) -> None:
    import pyarrow as pa

    times = [f"2023-01-{1 + i:02d}T12:00:00" if i % 3 else None for i in range(len(index))]
    table = index.store.table
    table = table.set_column(table.schema.get_field_index("exif_time"), "exif_time", pa.array(times, pa.string()))
    index.store.commit(table)
    index = Index.open(index.store.path)
    codes, legend = color_codes(index, "time")
    known = [i for i, t in enumerate(times) if t]
    assert legend == [times[known[0]], times[known[-1]]]
    assert codes[known[0]] == 1 and codes[known[-1]] == TIME_STEPS
    assert all(codes[i] == 0 for i, t in enumerate(times) if t is None)
    assert list(codes[known]) == sorted(codes[known])


def test_cli_map(index: Index, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from lookalike import cli

    def run(*argv: str) -> int:
        monkeypatch.setattr(sys, "argv", ["lookalike", *argv])
        try:
            cli.main()
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    assert run("map", "-i", str(index.store.path), "--method", "pca", "--json") == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["method"] == "pca" and out["images"] == len(index)
    assert run("map", "-i", str(index.store.path), "--method", "mds") == 1
    err = capsys.readouterr().err
    assert "--method must be one of umap, tsne, pca" in err and "Traceback" not in err
