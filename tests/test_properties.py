"""Property-based tests (hypothesis): invariants over generated inputs rather than chosen examples.

- incremental ``index`` after any sequence of add / modify / delete / rename / re-label equals a fresh build;
- exact search equals a brute-force numpy ranking;
- ``cluster`` output is a partition of the index, for any thresholds and sizes;
- the detections parser and the EXIF GPS reader raise nothing but the project's own error on any input.

Example counts come from the hypothesis profile in conftest.py (small by default; HYPOTHESIS_PROFILE=bench for more).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lookalike import Index  # noqa: E402
from lookalike.errors import LookalikeError  # noqa: E402

RES = 64
LABELS = ("A", "B", "C")
_mtime = itertools.count(1_600_000_000_000_000_000, 1_000_000_000)


@pytest.fixture(scope="module")
def pool(sample_dir: Path) -> list[bytes]:
    """Distinct image contents to place in the folder (the sample photos' bytes)."""
    return [p.read_bytes() for p in sorted(sample_dir.rglob("*.jpg"))][:12]


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    t = next(_mtime)  # a real edit moves the mtime; keep it moving however fast the test runs
    os.utime(path, ns=(t, t))


op = st.tuples(st.sampled_from(["add", "modify", "delete", "rename", "relabel"]), st.integers(0, 99),
               st.integers(0, 99), st.sampled_from(LABELS))  # fmt: skip


def _apply(root: Path, files: dict[str, int], step: tuple[str, int, int, str], pool: list[bytes]) -> None:
    kind, a, b, label = step
    names = sorted(files)
    if kind == "add" or not names:
        name = f"{label}/img{a:02d}.jpg"
        files[name] = b % len(pool)
        _put(root / name, pool[files[name]])
        return
    name = names[a % len(names)]
    if kind == "modify":
        files[name] = (files[name] + 1 + b % (len(pool) - 1)) % len(pool)
        _put(root / name, pool[files[name]])
    elif kind == "delete":
        (root / name).unlink()
        del files[name]
    else:  # rename (a new name, maybe in another folder) or relabel (same name, another folder)
        new = f"{label}/{'r' if kind == 'rename' else ''}{Path(name).name}"
        if new in files:
            return
        (root / new).parent.mkdir(parents=True, exist_ok=True)
        os.replace(root / name, root / new)
        files[new] = files.pop(name)


def _rows(index: Index) -> dict[str, tuple]:
    hashes = index.store.column("hash")
    return {
        n: (lab, h, index.vectors[i])
        for i, (n, lab, h) in enumerate(zip(index.names, index.labels, hashes, strict=True))
    }


@settings(max_examples=max(3, settings.default.max_examples // 3))
@given(runs=st.lists(st.lists(op, min_size=1, max_size=5), min_size=1, max_size=3))
def test_incremental_index_equals_fresh_build(pool: list[bytes], runs: list[list[tuple]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, files = Path(tmp) / "photos", {}
        for i in range(4):  # a starting folder, indexed once
            _apply(root, files, ("add", i, i, LABELS[i % 3]), pool)
        Index.build(root, Path(tmp) / "idx", labels="folders", resolution=RES)
        for run in runs:
            for step in run:
                _apply(root, files, step, pool)
            if not files:
                _apply(root, files, ("add", 0, 0, "A"), pool)
            updated = Index.build(root, Path(tmp) / "idx", labels="folders", resolution=RES)
        fresh = Index.build(root, Path(tmp) / "fresh", labels="folders", resolution=RES)
        got, want = _rows(Index.open(updated.store.path)), _rows(fresh)
        assert sorted(got) == sorted(want) == sorted(files)
        for name, (label, digest, vector) in want.items():
            assert got[name][:2] == (label, digest), name
            np.testing.assert_allclose(got[name][2], vector, atol=1e-5, err_msg=name)


@given(
    n=st.integers(1, 300),
    dim=st.integers(2, 64),
    k=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
    exclude=st.integers(0, 3),
)
def test_exact_search_equals_numpy_ranking(n: int, dim: int, k: int, seed: int, exclude: int) -> None:
    from lookalike.search import VectorSearch

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.standard_normal((3, dim)).astype(np.float32)
    excluded = [list(rng.choice(n, size=min(exclude, n), replace=False)) for _ in queries]
    scores, ids = VectorSearch(vectors).search(queries, k, exclude=excluded)
    for q, row_ids, row_scores, ex in zip(queries, ids, scores, excluded, strict=True):
        sims = vectors @ q
        sims[ex] = -np.inf
        order = np.argsort(-sims, kind="stable")[: min(k, n - len(ex))]
        valid = row_ids >= 0
        assert valid.sum() == len(order)  # k or every candidate left, then -1 padding
        assert not set(row_ids[valid].tolist()) & set(ex)
        np.testing.assert_allclose(row_scores[valid], sims[order], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sims[row_ids[valid]], row_scores[valid], rtol=1e-5, atol=1e-5)


@given(
    strong=st.floats(0.0, 1.0),
    gap=st.floats(0.0, 0.5),
    min_size=st.integers(1, 6),
    k=st.integers(1, 12),
    local_ratio=st.sampled_from([0.0, 0.9, 0.95, 1.0]),
    mutual=st.booleans(),
)
def test_cluster_output_is_a_partition(
    sample_index: Index, strong: float, gap: float, min_size: int, k: int, local_ratio: float, mutual: bool
) -> None:
    from lookalike.cluster import GraphParams, cluster_index

    params = GraphParams(strong=strong, weak=max(0.0, strong - gap), min_size=min_size, k=k, local_ratio=local_ratio,
                         mutual=mutual)  # fmt: skip
    out = cluster_index(sample_index, params=params, save=False).to_dict()
    members = [p for c in out["clusters"] for p in c["paths"]] + list(out["noise"])
    assert len(members) == len(set(members)) == len(sample_index)  # every image exactly once
    assert set(members) == set(sample_index.names)
    assert all(c["size"] == len(c["paths"]) >= min_size for c in out["clusters"])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=6), children, max_size=6),
    max_leaves=30,
)
box_like = st.one_of(
    st.lists(st.one_of(st.integers(-5, 5000), st.floats(), st.text(max_size=3), st.none()), min_size=0, max_size=6),
    st.dictionaries(st.sampled_from(["x1", "y1", "x2", "y2", "id", "bbox"]), json_values, max_size=6),
)
detections = st.one_of(
    json_values,
    st.lists(box_like, max_size=8),
    st.dictionaries(st.text(max_size=4), box_like, max_size=8),
    st.fixed_dictionaries({"annotations": st.lists(st.dictionaries(st.sampled_from(["bbox", "id"]), box_like))}),
)


@given(data=detections, fmt=st.sampled_from(["auto", "dict", "xyxy", "coco"]))
def test_detections_parser_raises_only_lookalike_errors(data: object, fmt: str) -> None:
    from lookalike.scenes import parse_detections

    try:
        boxes = parse_detections(data, fmt)
    except LookalikeError as exc:
        assert "\n" not in str(exc)
        return
    for b in boxes:
        assert all(math.isfinite(v) for v in (b.x1, b.y1, b.x2, b.y2))


@given(
    raw=st.binary(max_size=200)
    | st.text(max_size=200).map(str.encode)
    | detections.map(lambda d: json.dumps(d).encode())
)
def test_detections_file_raises_only_lookalike_errors(raw: bytes) -> None:
    from lookalike.scenes import load_detections

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "boxes.json"
        path.write_bytes(raw)
        try:
            load_detections(path)
        except LookalikeError as exc:
            assert "\n" not in str(exc)


rational = st.tuples(st.integers(-(2**32), 2**32), st.integers(-(2**32), 2**32))
gps_value = st.one_of(
    st.none(), st.integers(), st.floats(), st.text(max_size=4), st.binary(max_size=4), rational,
    st.lists(st.one_of(rational, st.floats(), st.integers(), st.text(max_size=2)), max_size=4).map(tuple),
)  # fmt: skip


@given(gps=st.dictionaries(st.integers(0, 31), gps_value, max_size=8))
def test_gps_reader_never_raises(gps: dict) -> None:
    from lookalike.images import gps_from_exif

    lat, lon = gps_from_exif(gps)
    assert (lat is None) == (lon is None)
    if lat is not None:
        assert -90 <= lat <= 90 and -180 <= lon <= 180


def test_property_profile_is_small_by_default() -> None:
    """./test.sh must stay fast: the default profile is the small one unless a run asks for the bench profile."""
    if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci":
        assert settings.default.max_examples <= 20
