"""Nearest-neighbour search over L2-normalised vectors with FAISS (inner product = cosine).

Exact search (``IndexFlatIP``) is the default: at up to a few hundred thousand vectors it is fast enough and has
no recall to lose. Restricting results to a subset (one class, or all the other classes) uses FAISS ID selectors so
the restriction costs no extra copy of the vectors.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.config import ANN_KINDS
from lookalike.errors import ConfigError, LookalikeError
from lookalike.io import atomic_write
from lookalike.metrics import ann_recall
from lookalike.store import ANN_FILE

if TYPE_CHECKING:
    import faiss


def faiss_search(index: Any, x: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` that still takes ``params`` after ``faiss.contrib.torch_utils`` patched the class.

    pytorch-metric-learning imports that module, which swaps ``Index.search`` for a torch-aware version without the
    ``params`` argument (ID selectors); the original numpy method stays available as ``search_numpy``.
    """
    search = getattr(index, "search_numpy", index.search)
    return search(x, k, params=params) if params is not None else search(x, k)


def id_selector(allowed: np.ndarray, n: int) -> tuple[Any, np.ndarray | None]:
    """A FAISS ID selector for ``allowed`` among ``n`` ids, and the array it reads (keep it alive while searching).

    A bitmap (one bit per id, one bit test per candidate) once the list is longer than 1/64 of the ids, where it is
    no bigger than the list; below that a hash set (``IDSelectorBatch``). Measured at 100k vectors, 50% allowed: the
    bitmap answered in 0.63× the time of the hash set, which also has to be built from every id on each search.
    """
    import faiss

    if len(allowed) * 64 <= n:
        return faiss.IDSelectorBatch(allowed), None
    bits = np.zeros(n, bool)
    bits[allowed] = True
    packed = np.packbits(bits, bitorder="little")
    return faiss.IDSelectorBitmap(n, faiss.swig_ptr(packed)), packed


class VectorSearch:
    """Top-k by cosine over a fixed set of vectors, with optional allow-lists and per-query exclusions.

    Exact (``IndexFlatIP`` over ``vectors``) unless ``ann`` is given: an approximate index over the same rows made by
    :func:`build_ann` (or loaded with :func:`load_ann`); its search depth (``nprobe`` / ``efSearch``) is in
    ``params``. Restricted searches over few enough ids stay exact even then (see :meth:`search`).
    """

    def __init__(
        self, vectors: np.ndarray | None, *, ann: faiss.Index | None = None, params: dict[str, Any] | None = None
    ) -> None:
        import faiss

        self.params = dict(params or {})
        if ann is not None:
            self.index = ann
            self.kind = ann_kind(ann)
            self.dim = ann.d
            _apply_params(ann, self.params)
            return
        if vectors is None:
            raise LookalikeError("VectorSearch needs vectors or an ANN index")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise LookalikeError(f"vectors must be 2-D, got shape {vectors.shape}")
        self.kind = "flat"
        self.dim = vectors.shape[1]
        self.index = faiss.IndexFlatIP(self.dim)
        if len(vectors):
            self.index.add(vectors)

    def __len__(self) -> int:
        return self.index.ntotal

    def _restricted(self, queries: np.ndarray, kk: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Search only ``allowed`` ids.

        Flat: an ID selector (no copy). ANN: up to ``EXACT_RESTRICTED_LIMIT`` allowed ids are scored exactly from
        vectors reconstructed out of the ANN index (a small class must not lose its few members to unprobed cells);
        above it the ANN search takes the selector, starts deeper in proportion to how much is filtered out, and
        deepens until the top ids are stable (:func:`_deepen`).
        """
        import faiss

        sel, _keep = id_selector(allowed, len(self))  # _keep: the bitmap must outlive the search
        if self.kind == "flat":
            params = faiss.SearchParameters(sel=sel)
            return faiss_search(self.index, queries, kk, params)
        if len(allowed) <= EXACT_RESTRICTED_LIMIT:
            return _exact_subset(self.index, queries, kk, allowed)
        widen = len(self) / max(len(allowed), 1)
        if self.kind == "ivf":
            ivf = faiss.extract_index_ivf(self.index)
            limit = ivf.nlist
            start = min(limit, int(np.ceil(ivf.nprobe * widen)))

            def at(depth: int) -> tuple[np.ndarray, np.ndarray]:
                return faiss_search(self.index, queries, kk, faiss.SearchParametersIVF(sel=sel, nprobe=depth))
        else:
            limit = max(kk, len(self))
            start = min(limit, max(kk, int(np.ceil(self.index.hnsw.efSearch * widen))))

            def at(depth: int) -> tuple[np.ndarray, np.ndarray]:
                return faiss_search(self.index, queries, kk, faiss.SearchParametersHNSW(sel=sel, efSearch=depth))

        return _deepen(at, start, limit)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        exclude: Sequence[Sequence[int]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and ids (N, k), best first; ids are -1 (score -inf) where fewer than k candidates exist.

        ``allowed``: ids that may be returned (None = all). ``exclude``: per query, ids never returned (the query
        itself when it is in the index).
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise LookalikeError(f"query vectors have {queries.shape[1]} dims, the index has {self.dim}")
        if k < 1:
            raise LookalikeError(f"k must be at least 1, got {k}")
        n = len(queries)
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        pool = len(self) if allowed is None else len(allowed)
        kk = min(k + extra, pool)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        ids = np.full((n, k), -1, dtype=np.int64)
        if kk == 0:
            return scores, ids
        if allowed is None:
            s, i = self.index.search(queries, kk)
        else:
            s, i = self._restricted(queries, kk, np.ascontiguousarray(allowed, dtype=np.int64))
        if not extra:
            m = min(k, kk)
            scores[:, :m], ids[:, :m] = s[:, :m], i[:, :m]
            scores[ids < 0] = -np.inf
            return scores, ids
        for row in range(n):
            banned = set(exclude[row]) if exclude else set()
            keep = [j for j in range(kk) if i[row, j] >= 0 and i[row, j] not in banned][:k]
            scores[row, : len(keep)] = s[row, keep]
            ids[row, : len(keep)] = i[row, keep]
        return scores, ids


#: Above this many vectors the kNN graph uses an IVF index: exact flat search is O(N²) and takes hours at 1M on two
#: cores, while IVF scans only ``nprobe / nlist`` of the vectors per query (recall is measured in BENCHMARKS.md).
EXACT_GRAPH_LIMIT = 200_000


def knn_graph(
    vectors: np.ndarray,
    k: int,
    batch_size: int = 4096,
    *,
    exact: bool | None = None,
    nlist: int | None = None,
    nprobe: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Each vector's k nearest other vectors: (ids, scores), shape (N, k), self excluded; never an N×N matrix.

    ``exact=None`` picks exact flat search up to ``EXACT_GRAPH_LIMIT`` vectors and IVF (``nlist`` cells, default
    4·√N, trained on a sample; ``nprobe`` cells searched per query) above it. Missing neighbours are id -1, -inf.
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    k = min(k, max(n - 1, 0))
    all_ids = np.full((n, k), -1, dtype=np.int64)
    all_scores = np.full((n, k), -np.inf, dtype=np.float32)
    if k == 0:
        return all_ids, all_scores
    if exact is None:
        exact = n <= EXACT_GRAPH_LIMIT
    if exact:
        index = VectorSearch(vectors).index
    else:
        cells = nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(vectors.shape[1])
        index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], cells, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10  # coarse cells need not be optimal; k-means is the slow part of building at 1M
        sample = min(n, 40 * cells)
        rng = np.random.default_rng(0)
        train = vectors[np.sort(rng.choice(n, sample, replace=False))] if sample < n else vectors
        index.train(train)
        index.add(vectors)
        index.nprobe = min(nprobe, cells)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        s, i = index.search(vectors[start:stop], k + 1)
        me = np.arange(start, stop)[:, None]
        drop = (i == me) | (i < 0)
        order = np.argsort(drop, axis=1, kind="stable")[:, :k]  # keep the first k that are neither self nor empty
        keep = ~np.take_along_axis(drop, order, axis=1)
        all_ids[start:stop] = np.where(keep, np.take_along_axis(i, order, axis=1), -1)
        all_scores[start:stop] = np.where(keep, np.take_along_axis(s, order, axis=1), -np.inf)
    return all_ids, all_scores


def knn_pairs(
    vectors: np.ndarray, num_matched: int = 10, min_score: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hloc-style retrieval pairs: each vector with its ``num_matched`` most similar others, each unordered pair once
    as ids (a, b) with a < b and their cosine; ordered by a, then by decreasing score."""
    ids, scores = knn_graph(vectors, num_matched)
    n, k = ids.shape
    i = np.repeat(np.arange(n), k)
    j, s = ids.ravel(), scores.ravel()
    ok = j >= 0
    if min_score is not None:
        ok &= s >= min_score
    a, b, s = np.minimum(i, j)[ok], np.maximum(i, j)[ok], s[ok]
    order = np.lexsort((-s, b, a))
    a, b, s = a[order], b[order], s[order]
    first = np.ones(len(a), bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    a, b, s = a[first], b[first], s[first]
    order = np.lexsort((b, -s, a))
    return a[order], b[order], s[order]


# --- approximate search for large indexes ----------------------------------------------------------------

#: ``--ann auto`` stays exact below this many vectors. Measured (BENCHMARKS.md, scale; 1280-d, 2 shared cores):
#: exact single-query search takes ~13 ms at 10k, ~90 ms at 100k, ~700 ms at 1M (it is memory-bandwidth bound);
#: below 100k an IVF index gains only a few times and costs recall, above it the gain grows to ~1000× at 1M.
AUTO_ANN_THRESHOLD = 100_000
#: An ANN index scores a restricted search (one class) exactly when it allows at most this many ids. Measured at 1M
#: (BENCHMARKS.md, scale): reconstructing rows costs ~5 µs each (10,000 allowed ids: 48 ms), while the ID-selector
#: path answered 100,000 allowed ids in 15 ms at recall 1.0, so only small allow-lists take the exact path.
EXACT_RESTRICTED_LIMIT = 2_000
#: Build-time tuning picks the smallest search depth whose measured recall@10 reaches this.
TARGET_RECALL = 0.95


def ann_kind(index: faiss.Index) -> str:
    import faiss

    if isinstance(index, faiss.IndexFlat):
        return "flat"
    with contextlib.suppress(RuntimeError):
        faiss.extract_index_ivf(index)
        return "ivf"
    if hasattr(index, "hnsw"):
        return "hnsw"
    raise LookalikeError(f"unsupported FAISS index type {type(index).__name__}")


def choose_ann(kind: str, n: int) -> str:
    """The index type actually built for ``--ann kind`` over ``n`` vectors (auto: exact while it is fast enough).

    auto picks IVF over HNSW above the threshold: in BENCHMARKS.md both reach the recall target and HNSW answers
    faster, but IVF builds ~8× faster on two cores (9 s vs 74 s at 50k vectors), scores small allow-lists exactly
    from its direct map, and memory-maps from disk.
    """
    if kind not in ANN_KINDS:
        raise ConfigError(f"ann must be one of {', '.join(ANN_KINDS)}, got {kind!r}", setting="ann")
    if kind == "auto":
        return "flat" if n < AUTO_ANN_THRESHOLD else "ivf"
    return kind if n else "flat"  # nothing to train on yet


def _apply_params(index: faiss.Index, params: dict[str, Any]) -> None:
    import faiss

    if "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    if "ef_search" in params:
        index.hnsw.efSearch = int(params["ef_search"])


def _float32_rows(vectors: np.ndarray, start: int, stop: int) -> np.ndarray:
    return np.ascontiguousarray(vectors[start:stop], dtype=np.float32)


def exact_topk(queries: np.ndarray, vectors: np.ndarray, k: int, chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product, reading ``vectors`` (float32 or float16) a chunk at a time: ground truth for
    recall without a float32 copy of a large index."""
    import faiss

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = len(vectors)
    k = min(k, n)
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    for start in range(0, n, chunk):
        block = _float32_rows(vectors, start, min(start + chunk, n))
        s, i = faiss.knn(queries, block, min(k, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
        s_all = np.concatenate([best_s, s], axis=1)
        i_all = np.concatenate([best_i, np.where(i >= 0, i + start, -1)], axis=1)
        order = np.argsort(-s_all, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(s_all, order, axis=1)
        best_i = np.take_along_axis(i_all, order, axis=1)
    return best_s, best_i


def _deepen(
    at: Callable[[int], tuple[np.ndarray, np.ndarray]], start: int, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """Search at ``start`` depth, then twice as deep until no query's top ids change (or at ``limit``).

    A filter scatters the allowed ids over the whole space: the nearest allowed vectors lie far down the unfiltered
    ranking, in cells a depth scaled by the filtered-out share alone does not reach. Measured on 300k clustered
    vectors (IVF, 512 cells, tuned to nprobe 1): with a random 1% allow-list that scaled depth found recall@10 0.90,
    at 3% 0.92; deepening until stable found 0.98 and 0.975 for about 3-5× the scaled search's time.
    """
    depth = start
    s, i = at(depth)
    while depth < limit:
        deeper = min(limit, 2 * depth)
        s2, i2 = at(deeper)
        stable = all(set(a.tolist()) == set(b.tolist()) for a, b in zip(i, i2, strict=True))
        s, i, depth = s2, i2, deeper
        if stable:
            break
    return s, i


def _exact_subset(
    index: faiss.Index, queries: np.ndarray, k: int, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    rows = index.reconstruct_batch(allowed)
    s, i = faiss.knn(queries, rows, min(k, len(allowed)), metric=faiss.METRIC_INNER_PRODUCT)
    ids = np.where(i >= 0, allowed[np.clip(i, 0, None)], -1)
    if s.shape[1] < k:
        pad = k - s.shape[1]
        s = np.pad(s, ((0, 0), (0, pad)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return s, ids


def _self_excluded(ids: np.ndarray, scores: np.ndarray, selves: np.ndarray, k: int) -> np.ndarray:
    out = np.full((len(ids), k), -1, np.int64)
    for r in range(len(ids)):
        keep = [x for x in ids[r] if x >= 0 and x != selves[r]][:k]
        out[r, : len(keep)] = keep
    return out


def build_ann(
    vectors: np.ndarray,
    kind: str,
    *,
    vector_type: str = "float32",
    k: int = 10,
    queries: int = 500,
    target_recall: float = TARGET_RECALL,
    seed: int = 0,
    chunk: int = 100_000,
) -> tuple[faiss.Index, dict[str, Any]]:
    """Build an IVF or HNSW index over ``vectors`` and tune its search depth against exact search.

    ``queries`` of the index's own vectors (each excluding itself) are searched exactly and approximately; the
    smallest depth whose recall@k reaches ``target_recall`` is kept (the deepest tried if none does), and the info
    dict records it with the measured recall so ``lookalike info`` can show what was traded. float16 storage keeps
    the ANN copy in float16 too (scalar quantizer), so the index takes half the memory.
    """
    import faiss

    started = time.perf_counter()
    n, d = vectors.shape
    rng = np.random.default_rng(seed)
    fp16 = vector_type == "float16"
    info: dict[str, Any] = {"index": kind, "count": int(n), "vectors": vector_type}
    if kind == "ivf":
        nlist = int(2 ** round(np.log2(max(16.0, np.sqrt(n)))))
        nlist = max(1, min(nlist, n // 39 or 1))
        quantizer = faiss.IndexFlatIP(d)
        if fp16:
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, d, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
            )
        else:
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()  # the IVF index owns (and frees) its coarse quantizer
        sample = np.sort(rng.choice(n, min(n, 64 * nlist), replace=False))
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
        info["nlist"] = nlist
        depths, key = [d_ for d_ in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if d_ <= nlist], "nprobe"
    elif kind == "hnsw":
        m = 32
        if fp16:
            index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_fp16, m, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        info["m"] = m
        depths, key = [16, 32, 64, 128, 256, 512], "ef_search"
    else:
        raise LookalikeError(f"cannot build an ANN index of kind {kind!r}; use ivf or hnsw")
    for start in range(0, n, chunk):
        index.add(_float32_rows(vectors, start, min(start + chunk, n)))
    if kind == "ivf":
        faiss.extract_index_ivf(index).make_direct_map()  # for exact scoring of small allow-lists
    info["build_seconds"] = round(time.perf_counter() - started, 2)

    q_ids = np.sort(rng.choice(n, min(n, queries), replace=False))
    q = np.ascontiguousarray(vectors[q_ids], dtype=np.float32)
    kq = min(k + 1, n)
    ts, ti = exact_topk(q, vectors, kq)
    truth = _self_excluded(ti, ts, q_ids, k)
    chosen, recall = depths[-1], 0.0
    for depth in depths:
        _apply_params(index, {key: depth})
        s, i = index.search(q, kq)
        recall = ann_recall(_self_excluded(i, s, q_ids, k), truth)
        if recall >= target_recall:
            chosen = depth
            break
    _apply_params(index, {key: chosen})
    info.update({key: int(chosen), f"recall_at_{k}": round(recall, 4), "recall_queries": len(q_ids)})
    info["seconds"] = round(time.perf_counter() - started, 2)
    return index, info


def save_ann(index: faiss.Index, path: str | os.PathLike[str]) -> None:
    """Written atomically, so a reader never memory-maps half an index."""
    import faiss

    atomic_write(path, lambda tmp: faiss.write_index(index, str(tmp)))


def load_ann(path: str | os.PathLike[str]) -> faiss.Index:
    """Read an ANN index, memory-mapped where FAISS can (IVF lists), so opening a large index is instant and its
    pages are shared between processes."""
    import faiss

    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError:
        try:
            return faiss.read_index(str(path))
        except RuntimeError as exc:
            raise LookalikeError(f"{path}: unreadable ANN index ({exc}); rebuild with `lookalike index`") from None


def vectors_fingerprint(store: Any) -> str:
    """Identifies the vectors an ANN index was built from without hashing gigabytes: the rows (path + content
    hash), how they were described (model, pooling, resolution, post-transform), the stored type, and when the index
    was created (``--rebuild`` re-creates it)."""
    import hashlib

    h = hashlib.sha1()
    config = store.recipe(("created", "model", "pooling", "resolution", "post", "dim", "vectors"))
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, digest in zip(store.column("path"), store.column("hash"), strict=True):
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


def refresh_ann(store: Any, kind: str | None = None) -> dict[str, Any]:
    """Make the index folder's ANN index match its vectors and ``--ann kind`` (default: the stored kind, else auto).

    Exact search needs no file (any old one is removed). An ANN index is rebuilt only when the vectors changed
    (fingerprint) or another kind is asked for; the header records kind, parameters and measured recall.
    """
    kind = kind or (store.ann or {}).get("kind", "auto")
    actual = choose_ann(kind, len(store))
    path = store.file(ANN_FILE)
    if actual == "flat":
        path.unlink(missing_ok=True)
        info: dict[str, Any] = {"kind": kind, "index": "flat", "exact": True}
    else:
        fingerprint = vectors_fingerprint(store)
        old = store.ann or {}
        if old.get("index") == actual and old.get("fingerprint") == fingerprint and path.is_file():
            info = {**old, "kind": kind}
        else:
            index, info = build_ann(store.stored_vectors(), actual, vector_type=store.vector_type)
            save_ann(index, path)
            info = {"kind": kind, **info, "fingerprint": fingerprint}
    store.record_ann(info)
    return info


def open_searcher(store: Any) -> VectorSearch:
    """The searcher for an index folder: its ANN index when one is current, else exact search over its vectors.

    A stale ANN file (vectors changed by something that did not refresh it) is never used: exact search is slower
    but right, and the next ``lookalike index`` rebuilds the ANN index.
    """
    info = store.ann or {}
    path = store.file(ANN_FILE)
    if (
        info.get("index") in ("ivf", "hnsw")
        and path.is_file()
        and info.get("fingerprint") == vectors_fingerprint(store)
    ):
        index = load_ann(path)
        if index.ntotal == len(store) and index.d == store.dim:
            return VectorSearch(None, ann=index, params=info)
    return VectorSearch(store.vectors)


def describe_ann(info: dict[str, Any] | None) -> str:
    """One line for ``lookalike info``: which search, its parameters and the recall measured when it was built."""
    if not info or info.get("index", "flat") == "flat":
        return "exact (flat)" + (f", --ann {info['kind']}" if info and info.get("kind") not in (None, "flat") else "")
    params = ", ".join(f"{k} {info[k]}" for k in ("nlist", "nprobe", "m", "ef_search") if k in info)
    recall = info.get("recall_at_10")
    return (
        f"{info['index']} ({params}; {info.get('vectors', 'float32')}), recall@10 {recall:.3f} vs exact on "
        f"{info.get('recall_queries')} of its own vectors; built in {info.get('build_seconds')}s"
    )
