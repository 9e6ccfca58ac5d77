"""lookalike.search: exact search against brute force, approximate search (IVF, HNSW) and its tuning, the kNN graph, float16 vectors, and the ANN file kept in the index folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lookalike.errors import LookalikeError
from lookalike.metrics import ann_recall
from lookalike.search import (
    ANN_FILE,
    TARGET_RECALL,
    VectorSearch,
    build_ann,
    choose_ann,
    exact_topk,
    knn_graph,
    load_ann,
    open_searcher,
    refresh_ann,
    save_ann,
)
from lookalike.store import Store, make_table


def clustered(n: int, dim: int = 32, centres: int = 50, seed: int = 0) -> np.ndarray:
    """Vectors around fixed random centres (the same for every seed: ``seed`` draws new points, like new photos)."""
    c = np.random.default_rng(12345).normal(size=(centres, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = c[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_store(path: Path, vectors: np.ndarray, vector_type: str = "float32") -> Store:
    store = Store.create(path, {"root": ".", "labels": "folders", "dim": vectors.shape[1], "vectors": vector_type})
    rows = [
        {"path": f"img{i:06d}.jpg", "size": 1, "mtime_ns": 1, "hash": f"h{i}", "label": f"c{i % 3}"}
        for i in range(len(vectors))
    ]
    store.commit(make_table(rows, vectors, vectors.shape[1]), [])
    return Store.open(path)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(6000)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
@pytest.mark.parametrize("vector_type", ["float32", "float16"])
def test_ann_recall_against_exact(data: np.ndarray, kind: str, vector_type: str) -> None:
    index, info = build_ann(data.astype(vector_type), kind, vector_type=vector_type, queries=200)
    assert info["index"] == kind and info["recall_queries"] == 200
    assert info["recall_at_10"] >= 0.95  # the tuned depth reaches the target
    # independent check on fresh queries (not index members)
    queries = clustered(300, seed=1)
    _, truth = exact_topk(queries, data, 10)
    _, found = VectorSearch(None, ann=index, params=info).search(queries, 10)
    assert ann_recall(found, truth) >= 0.9
    # and exact search really is exact
    _, flat = VectorSearch(data).search(queries, 10)
    assert ann_recall(flat, truth) == 1.0


#: The depths build-time tuning tries, shallowest first (``nprobe`` up to nlist / ``efSearch``).
LADDERS = {
    "ivf": ("nprobe", (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)),
    "hnsw": ("ef_search", (16, 32, 64, 128, 256, 512)),
}


def own_recall(index: object, vectors: np.ndarray, params: dict, k: int = 10) -> float:
    """recall@k of every index vector as a query (itself excluded) at the given depth, as the tuner measures it."""
    _, truth = exact_topk(vectors, vectors, k + 1)
    _, found = VectorSearch(None, ann=index, params=params).search(vectors, k + 1)

    def without_self(ids: np.ndarray) -> np.ndarray:
        return np.stack([row[row != me][:k] for me, row in enumerate(ids)])

    return ann_recall(without_self(found), without_self(truth))


def random_unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(
    "kind, make",
    [
        ("ivf", lambda: clustered(6000)),  # nprobe 1 misses neighbours in the next cell: ~0.92
        ("hnsw", lambda: random_unit(5000, 512)),  # structureless 512-d: efSearch 16 gives ~0.89
    ],
)
def test_tuning_keeps_the_smallest_depth_that_reaches_the_target(kind: str, make: Callable[[], np.ndarray]) -> None:
    """README: the depth is tuned "to the smallest that gives recall@10 ≥ 0.95". Tuned on every vector (queries =
    N), so the recall measured here at each depth is exactly what the tuner saw."""
    vectors = make()
    index, info = build_ann(vectors, kind, queries=len(vectors))
    key, ladder = LADDERS[kind]
    ladder = [d for d in ladder if kind != "ivf" or d <= info["nlist"]]
    chosen = info[key]
    assert chosen in ladder
    step = ladder.index(chosen)
    assert step > 0, "the data must need more than the shallowest depth, or 'smallest' is not tested"
    at_chosen = own_recall(index, vectors, {key: chosen})
    assert at_chosen >= TARGET_RECALL and at_chosen == pytest.approx(info["recall_at_10"], abs=1e-4)
    shallower = own_recall(index, vectors, {key: ladder[step - 1]})
    assert shallower < TARGET_RECALL  # one step less would miss the target: the chosen depth is the smallest
    # the saved parameters are what a searcher uses
    assert VectorSearch(None, ann=index, params=info).params[key] == chosen


def test_exact_topk_in_chunks_matches_faiss(data: np.ndarray) -> None:
    q = data[:20]
    s1, i1 = exact_topk(q, data.astype(np.float16), 5, chunk=777)
    s2, i2 = VectorSearch(data.astype(np.float16).astype(np.float32)).search(q, 5)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_restricted_search_only_returns_allowed_ids(data: np.ndarray, kind: str) -> None:
    index, info = build_ann(data, kind, queries=100)
    ann = VectorSearch(None, ann=index, params=info)
    exact = VectorSearch(data)
    queries = data[:5]
    small = np.arange(0, len(data), 97)  # a rare class: scored exactly
    s, i = ann.search(queries, 10, allowed=small, exclude=[[0]] * 5)
    assert np.isin(i[i >= 0], small).all() and 0 not in i
    np.testing.assert_array_equal(i, exact.search(queries, 10, allowed=small, exclude=[[0]] * 5)[1])
    few = np.array([3, 10, 42])
    s, i = ann.search(queries, 10, allowed=few)
    assert sorted(i[0][:3].tolist()) == [3, 10, 42] and (i[:, 3:] == -1).all() and np.isinf(s[:, 3:]).all()


def test_restricted_search_with_selector_above_exact_limit(data: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    import lookalike.search as search

    monkeypatch.setattr(search, "EXACT_RESTRICTED_LIMIT", 10)  # force the ID-selector path
    index, info = build_ann(data, "ivf", queries=100)
    ann = VectorSearch(None, ann=index, params=info)
    allowed = np.flatnonzero(np.arange(len(data)) % 3 == 1)
    queries = clustered(100, seed=3)
    _, i = ann.search(queries, 10, allowed=allowed)
    assert np.isin(i[i >= 0], allowed).all()
    _, truth = VectorSearch(data).search(queries, 10, allowed=allowed)
    assert ann_recall(i, truth) >= 0.9


def test_a_sparse_filter_through_ivf_keeps_the_recall_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """A random 1% allow-list scatters over every cell: the nearest allowed vectors are far down the unfiltered
    ranking. Probing deeper only in proportion to what is filtered out found recall@10 0.90 here."""
    import lookalike.search as search

    monkeypatch.setattr(search, "EXACT_RESTRICTED_LIMIT", 10)  # the ID-selector path, as at 1M with 10,000 allowed
    n, dim, centres = 100_000, 128, 1000
    c = np.random.default_rng(12345).normal(size=(centres, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)

    def draw(m: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        x = c[rng.integers(0, centres, m)] + rng.normal(scale=0.6 / np.sqrt(dim), size=(m, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    data, queries = draw(n, 0), draw(200, 3)
    index, info = build_ann(data, "ivf", queries=200)
    assert info["nprobe"] == 1  # one cell is enough unfiltered
    allowed = np.sort(np.random.default_rng(1).choice(n, n // 100, replace=False))
    _, i = VectorSearch(None, ann=index, params=info).search(queries, 10, allowed=allowed)
    _, truth = VectorSearch(data).search(queries, 10, allowed=allowed)
    assert np.isin(i[i >= 0], allowed).all()
    assert ann_recall(i, truth) >= TARGET_RECALL


def test_save_and_load_round_trip(data: np.ndarray, tmp_path: Path) -> None:
    index, info = build_ann(data, "ivf", queries=50)
    save_ann(index, tmp_path / "x.faiss")
    assert [p.name for p in tmp_path.iterdir()] == ["x.faiss"]  # no temporary left behind
    loaded = load_ann(tmp_path / "x.faiss")
    a = VectorSearch(None, ann=index, params=info).search(data[:10], 5)
    b = VectorSearch(None, ann=loaded, params=info).search(data[:10], 5)
    np.testing.assert_array_equal(a[1], b[1])
    (tmp_path / "bad.faiss").write_bytes(b"garbage")
    with pytest.raises(LookalikeError, match="unreadable ANN index"):
        load_ann(tmp_path / "bad.faiss")


def test_knn_graph_above_the_exact_limit_comes_from_ivf_and_agrees_with_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """README (cluster, pairs): exact kNN graph up to the limit, above it IVF with 4·√N cells and 16 probed."""
    import faiss

    import lookalike.search as search
    from lookalike.cluster import similar_pairs

    built: list = []
    real_ivf = faiss.IndexIVFFlat

    def spy(*args: object):  # noqa: ANN202
        index = real_ivf(*args)
        built.append(index)
        return index

    monkeypatch.setattr(faiss, "IndexIVFFlat", spy)
    monkeypatch.setattr(search, "EXACT_GRAPH_LIMIT", 1000)
    knn_graph(clustered(1000), 10)
    assert built == []  # up to the limit: exact
    x = clustered(25_000)  # large enough that 4·√N cells (632) is below the N/39 cap on cells
    exact_ids, exact_scores = knn_graph(x, 10, exact=True)
    ids, scores = knn_graph(x, 10)
    assert len(built) == 1  # above it: IVF
    assert built[0].nlist == int(4 * np.sqrt(len(x))) == 632 and built[0].nprobe == 16
    assert built[0].ntotal == len(x)
    assert ids.shape == (len(x), 10) and (ids >= 0).all()
    assert not (ids == np.arange(len(x))[:, None]).any()  # never its own neighbour
    np.testing.assert_allclose(scores, np.einsum("nd,nkd->nk", x, x[ids]), atol=1e-5)  # true cosines of those ids
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    assert ann_recall(ids, exact_ids) >= 0.99  # measured 0.9996
    assert (scores[:, 0] <= exact_scores[:, 0] + 1e-5).all()

    # `lookalike pairs` goes through the same graph
    pairs = similar_pairs(x, [f"{i:05d}" for i in range(len(x))], num_matched=5)
    assert len(built) == 2
    got = {(int(a), int(b)) for a, b, _ in pairs}
    rows, cols = np.repeat(np.arange(len(x)), 5), exact_ids[:, :5].ravel()
    want = set(zip(np.minimum(rows, cols).tolist(), np.maximum(rows, cols).tolist(), strict=True))
    assert len(got & want) >= 0.99 * len(want)


def test_choose_ann() -> None:
    assert choose_ann("auto", 1000) == "flat"
    assert choose_ann("auto", 5_000_000) == "ivf"
    assert choose_ann("hnsw", 10) == "hnsw" and choose_ann("ivf", 0) == "flat"
    with pytest.raises(LookalikeError, match="ann must be one of"):
        choose_ann("lsh", 10)


def test_float16_store_round_trip(data: np.ndarray, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    s32 = make_store(tmp_path / "f32", data)
    s16 = make_store(tmp_path / "f16", data, "float16")
    assert pq.read_schema(s16.path / "images.parquet").field("vector").type.value_type == pa.float16()
    assert s16.vectors.dtype == np.float32 and s16.stored_vectors().dtype == np.float16
    np.testing.assert_allclose(s16.vectors, data, atol=1e-3)
    np.testing.assert_array_equal(s32.vectors, data)
    assert (s16.path / "images.parquet").stat().st_size < 0.75 * (s32.path / "images.parquet").stat().st_size
    # checkpoints written in float32 are cast to the store's type
    part = s16.write_part(make_table([{"path": "z.jpg"}], data[:1], data.shape[1]))
    assert pq.read_schema(part).field("vector").type.value_type == pa.float16()
    assert s16.read_parts().num_rows == 1


def test_refresh_persists_and_rebuilds_when_vectors_change(data: np.ndarray, tmp_path: Path) -> None:
    store = make_store(tmp_path / "ix", data, "float16")
    info = refresh_ann(store, "ivf")
    assert info["index"] == "ivf" and info["vectors"] == "float16" and 0.95 <= info["recall_at_10"] <= 1.0
    # the stored depth is the smallest reaching the target (tuned on 500 vectors, checked here on all 6,000)
    stored = load_ann(store.path / ANN_FILE)
    assert info["nprobe"] > 1 and own_recall(stored, data, {"nprobe": info["nprobe"]}) >= TARGET_RECALL
    ladder = LADDERS["ivf"][1]
    shallower = ladder[ladder.index(info["nprobe"]) - 1]
    assert own_recall(stored, data, {"nprobe": shallower}) < TARGET_RECALL
    assert (store.path / ANN_FILE).is_file()
    assert json.loads((store.path / "meta.json").read_text())["ann"]["fingerprint"] == info["fingerprint"]
    reopened = Store.open(store.path)
    searcher = open_searcher(reopened)
    assert searcher.kind == "ivf"
    mtime = (store.path / ANN_FILE).stat().st_mtime_ns
    assert refresh_ann(reopened)["fingerprint"] == info["fingerprint"]  # unchanged vectors: kept, not rebuilt
    assert (store.path / ANN_FILE).stat().st_mtime_ns == mtime
    # vectors change (a row dropped): the stale file is not used, and refreshing rebuilds it
    reopened.commit(reopened.table.slice(0, len(data) - 1), [])
    assert open_searcher(reopened).kind == "flat"
    assert refresh_ann(reopened)["count"] == len(data) - 1
    assert open_searcher(reopened).kind == "ivf"
    # back to exact: the file goes
    assert refresh_ann(reopened, "flat")["index"] == "flat"
    assert not (store.path / ANN_FILE).exists()


def test_index_build_with_ann_and_float16(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lookalike.cli import app
    from lookalike.index import Index
    from lookalike.samples import make_samples

    photos = make_samples(tmp_path / "photos", per_class=5, size=160)
    exact = Index.build(photos, tmp_path / "exact")
    idx = Index.build(photos, tmp_path / "ann", ann="hnsw", vectors="float16")
    assert idx.info()["search"]["index"] == "hnsw" and idx.info()["vectors"] == "float16"
    reopened = Index.open(tmp_path / "ann")
    assert reopened.searcher.kind == "hnsw"
    q = next((photos / "temple").glob("*.jpg"))
    got = [m.name for m in reopened.search(q, 4, mode="same-class")]
    assert got == [m.name for m in exact.search(q, 4, mode="same-class")]
    assert all(n.startswith("temple/") for n in got)
    with pytest.raises(LookalikeError, match="ann must be one of"):
        Index.build(photos, tmp_path / "ann", ann="annoy")
    result = CliRunner().invoke(app, ["info", "--index", str(tmp_path / "ann")])
    assert result.exit_code == 0 and "hnsw" in result.output and "recall@10" in result.output
    # switching an existing index to float32 + exact is a cast, not a re-embed
    again = Index.build(photos, tmp_path / "ann", ann="flat", vectors="float32")
    assert again.report is not None and again.report.embedded == 0
    assert again.store.vector_type == "float32" and again.searcher.kind == "flat"
    np.testing.assert_allclose(again.vectors, exact.vectors, atol=2e-3)
