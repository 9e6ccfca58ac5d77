"""The graph method and HDBSCAN: from a kNN graph (never an N×N matrix) to cluster labels.

The graph method follows the seed damaged-buildings pipeline: connected components over *strong* edges, singletons
grown onto clusters along *weak* edges, clusters merged where enough weak edges link them, clusters merged again when
their GPS centres are close, leftover singletons grouped among themselves. Fixed thresholds (the seed's 0.35 / 0.2
for NetVLAD) do not carry over to another descriptor or collection: cosine similarities of GeM-pooled CNN features
sit much higher than NetVLAD's, so by default the thresholds are read off the collection's own kNN-similarity
distribution (``suggest_thresholds``) and fixed numbers are used only when the user gives them.

On L2-normalised vectors Euclidean distance is a monotone function of cosine similarity (d² = 2 − 2·cos), so
HDBSCAN runs with Euclidean trees instead of a brute-force cosine matrix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.cluster import HDBSCAN

from lookalike.aggregate import l2_normalize
from lookalike.cluster.gps import gps_merge
from lookalike.cluster.labels import components, relabel
from lookalike.errors import ConfigError, LookalikeError
from lookalike.search import knn_pairs

# Adaptive thresholds (see suggest_thresholds): background = 75th percentile of random-pair similarity, "same group"
# = median nearest-neighbour similarity; strong and weak sit at these fractions of the way from one to the other.
BACKGROUND_QUANTILE = 0.75
STRONG_FRACTION = 0.8
WEAK_FRACTION = 0.5
RANDOM_PAIRS = 20_000
# An edge counts only if it scores at least this fraction of the weaker endpoint's best match (see local_prune).
LOCAL_RATIO = 0.95


# --- HDBSCAN ---------------------------------------------------------------------------------------------------------


def hdbscan_labels(
    vectors: np.ndarray,
    min_size: int = 5,
    *,
    min_samples: int | None = None,
    second_pass: bool = True,
    second_min_size: int = 2,
    pca: int | None = None,
) -> np.ndarray:
    """Cluster labels (-1 = noise). The second pass (seed packed-scenes) re-runs HDBSCAN on the first pass's noise
    with a minimum size of 2, rescuing small groups that the first pass could not tell from noise.

    ``pca``: reduce to this many dimensions first (then re-normalise); density estimates are less noisy and the
    trees much faster in 32–128 dimensions than in a backbone's 1280."""
    x = l2_normalize(np.asarray(vectors, dtype=np.float64))
    n = len(x)
    labels = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return labels
    if pca and pca < x.shape[1] and n > 2:
        from sklearn.decomposition import PCA

        x = l2_normalize(PCA(n_components=min(pca, n - 1), random_state=0).fit_transform(x))
    size = max(2, min(min_size, n))
    labels = (
        HDBSCAN(min_cluster_size=size, min_samples=min_samples, metric="euclidean", copy=True)
        .fit_predict(x)
        .astype(np.int64)
    )
    if second_pass:
        noise = np.flatnonzero(labels < 0)
        if len(noise) >= max(2, second_min_size):
            sub = HDBSCAN(min_cluster_size=second_min_size, metric="euclidean", copy=True).fit_predict(x[noise])
            offset = labels.max() + 1
            rescued = sub >= 0
            labels[noise[rescued]] = sub[rescued] + offset
    return labels


# --- the similarity graph --------------------------------------------------------------------------------------------


def similarity_graph(ids: np.ndarray, scores: np.ndarray, *, mutual: bool = False) -> sparse.csr_matrix:
    """Symmetric sparse graph from a kNN list: edge i–j if either is among the other's k nearest, weight = cosine.

    Only positive similarities are kept (a sparse matrix cannot tell a stored 0 from a missing edge, and no
    threshold worth using is ≤ 0)."""
    n = len(ids)
    rows = np.repeat(np.arange(n), ids.shape[1] if ids.ndim == 2 else 0)
    cols, vals = ids.ravel(), scores.ravel().astype(np.float32)
    ok = (cols >= 0) & (vals > 0)
    a = sparse.csr_matrix((vals[ok], (rows[ok], cols[ok])), shape=(n, n))
    return (a.minimum(a.T) if mutual else a.maximum(a.T)).tocsr()


def local_prune(
    ids: np.ndarray, scores: np.ndarray, ratio: float = LOCAL_RATIO, separate: np.ndarray | None = None
) -> np.ndarray:
    """kNN scores with edges that are weak *for their endpoints* zeroed: kept where cosine ≥ ratio × the smaller of
    the two endpoints' nearest-neighbour similarities.

    WHY: one global threshold cannot serve a collection whose groups differ in tightness. In a folder of copies
    (crops, rescales, recompressions) every photo's best match scores ~0.99, while a different photo of the same
    subject scores 0.87 — above any global threshold that still keeps loose groups, so single-linkage components
    chain the copy groups into subject-sized blobs. Scaling each edge by its endpoints' own best match (local
    scaling, as in self-tuning spectral clustering) cuts those bridges and leaves edges inside loose groups, whose
    members' best matches are themselves loose. 0 turns it off.

    ``separate`` (same shape as ``ids``) marks pairs a person said are not copies: their similarity does not count as
    either photo's best match, or two near-identical frames would set each other's scale to ~0.99 and be cut off
    from their subject as if they were a copy group.
    """
    if ratio <= 0:
        return scores
    top1 = np.where(ids[:, 0] >= 0, scores[:, 0], np.inf)
    if separate is not None and separate.any():  # the best match among the pairs not marked
        best = np.where((ids >= 0) & ~separate, scores, -np.inf).max(axis=1)
        top1 = np.where(np.isfinite(best), best, np.inf)
    j = np.where(ids >= 0, ids, 0)
    ref = np.minimum(top1[:, None], top1[j])
    return np.where(scores >= ratio * ref, scores, 0).astype(scores.dtype, copy=False)


def _threshold(graph: sparse.csr_matrix, value: float) -> sparse.csr_matrix:
    g = graph.copy()
    g.data = np.where(g.data >= value, 1, 0).astype(np.int8)
    g.eliminate_zeros()
    return g


@dataclass
class Suggestion:
    """The kNN-similarity distribution and the thresholds read off it."""

    strong: float
    weak: float
    background: float
    neighbour: float
    quantiles: dict[str, float]
    nn_quantiles: dict[str, float]
    random_quantiles: dict[str, float]
    histogram: list[tuple[float, float, int]]
    edges: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "strong": self.strong,
            "weak": self.weak,
            "background": self.background,
            "neighbour": self.neighbour,
            "edges": self.edges,
            "knn_quantiles": self.quantiles,
            "nearest_neighbour_quantiles": self.nn_quantiles,
            "random_pair_quantiles": self.random_quantiles,
            "histogram": [{"from": a, "to": b, "count": c} for a, b, c in self.histogram],
            "rule": RULE,
        }


RULE = (
    f"background B = {BACKGROUND_QUANTILE:.0%} quantile of random-pair similarity, neighbour N = median "
    f"nearest-neighbour similarity; strong = B + {STRONG_FRACTION}·(N − B), weak = B + {WEAK_FRACTION}·(N − B)"
)


def _quantiles(x: np.ndarray) -> dict[str, float]:
    qs = [0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0]
    return {f"q{int(q * 100):02d}": round(float(np.quantile(x, q)), 4) for q in qs}


def random_pair_similarities(vectors: np.ndarray, pairs: int = RANDOM_PAIRS, seed: int = 0) -> np.ndarray:
    """Cosine of random distinct pairs: what "unrelated" looks like in this collection, in O(pairs) memory."""
    n = len(vectors)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, pairs)
    j = (i + rng.integers(1, n, pairs)) % n  # never i itself
    a = np.asarray(vectors[i], dtype=np.float32)
    b = np.asarray(vectors[j], dtype=np.float32)
    return (a * b).sum(axis=1)


def suggest_thresholds(scores: np.ndarray, vectors: np.ndarray) -> Suggestion:
    """Strong/weak thresholds from the collection's own similarities (``scores``: kNN, (N, k), best first).

    WHY this rule: fixed cosine thresholds mean different things for different descriptors and collections (GeM
    CNN features of unrelated photos already score 0.6–0.8; NetVLAD's 0.35 was "same building"). Two levels can
    be read off any collection cheaply: B, what unrelated photos score (a high quantile of random pairs, so the
    odd related random pair does not matter), and N, what a photo scores with its closest other photo (the median
    nearest-neighbour similarity; in a collection of groups that neighbour is usually in the same group). The
    thresholds sit at fixed fractions of the way from B to N, so they scale with the descriptor's range. The
    fractions were set on products and on synthetic Gaussian blobs and checked on other collections (BENCHMARKS.md).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0 or len(vectors) < 2 or not np.isfinite(scores).any():
        raise LookalikeError("not enough images to measure similarities; clustering needs at least 2 images")
    finite = scores[np.isfinite(scores)]
    nn = scores[:, 0][np.isfinite(scores[:, 0])]
    rand = random_pair_similarities(vectors)
    counts, edges = np.histogram(finite, bins=20)
    hist = [(round(float(edges[i]), 4), round(float(edges[i + 1]), 4), int(counts[i])) for i in range(len(counts))]
    b = float(np.quantile(rand, BACKGROUND_QUANTILE))
    nmed = float(np.median(nn))
    if nmed <= b:  # neighbours no closer than random pairs: no group structure to read; stay near the neighbours
        b = float(np.quantile(rand, 0.5))
    strong = round(b + STRONG_FRACTION * (nmed - b), 4)
    weak = round(min(b + WEAK_FRACTION * (nmed - b), strong), 4)
    return Suggestion(
        strong,
        weak,
        round(b, 4),
        round(nmed, 4),
        _quantiles(finite),
        _quantiles(nn),
        _quantiles(rand),
        hist,
        int(finite.size),
    )


# --- graph clustering ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GraphParams:
    """Knobs of the graph method; None thresholds are read off the similarity distribution. Keyword construction
    only; the values are checked here, so a bad one is refused (``ConfigError``, naming the setting) before any work.
    """

    k: int = 10
    strong: float | None = None
    weak: float | None = None
    merge_links: int = 3
    merge_ratio: float = 0.5
    gps_count: int = 4
    gps_distance: float = 30.0
    min_size: int = 2
    mutual: bool = True
    local_ratio: float = LOCAL_RATIO

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"k (neighbours per image) must be at least 1, got {self.k}", setting="k")
        if self.min_size < 1:
            raise ConfigError(
                f"min_size (smallest cluster) must be at least 1, got {self.min_size}", setting="min_size"
            )
        if self.gps_distance < 0 or self.gps_count < 0:
            raise ConfigError(
                f"GPS distance and GPS count must not be negative, got {self.gps_distance:g} m and {self.gps_count}",
                setting="gps_distance" if self.gps_distance < 0 else "gps_count",
            )
        if self.strong is not None and self.weak is not None and self.weak > self.strong:
            raise ConfigError(
                f"weak threshold ({self.weak}) must not be above strong threshold ({self.strong})", setting="weak"
            )
        if not 0 <= self.local_ratio <= 1:
            raise ConfigError(f"local_ratio must be between 0 and 1, got {self.local_ratio}", setting="local_ratio")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def graph_labels(
    ids: np.ndarray,
    scores: np.ndarray,
    params: GraphParams,
    *,
    lat: np.ndarray | None = None,
    lon: np.ndarray | None = None,
    notes: list[str] | None = None,
    verdict: np.ndarray | None = None,
    separate: np.ndarray | None = None,
) -> np.ndarray:
    """Labels (-1 = noise) from a kNN graph; ``params.strong``/``weak`` must be set (see ``suggest_thresholds``).

    ``verdict`` (same shape as ``ids``; 1 verified, -1 refuted, 0 unknown) lets geometric verification decide the
    edges it could judge: a verified pair is a strong edge whatever its cosine or mutuality, a refuted pair is no
    edge at all (two look-alike façades), and only unknown pairs (an image too flat to verify) keep the cosine rules.

    ``separate`` (bool, same shape as ``ids``) marks pairs a person said are "not duplicates". Such a pair is never a
    strong edge (whatever its cosine or verification) and does not set either photo's local scale; it stays a weak
    edge. WHY: the decision says the two are different photos, not that they show different things, so their
    similarity may still attach a photo to its subject's cluster or count towards a merge like any weak edge, but it
    is not the copy-level evidence that alone makes two photos one cluster. They share a cluster only when the rest
    of the collection puts them there (or, left alone, along that weak edge, as any two similar leftovers).
    """
    notes = notes if notes is not None else []
    n = len(ids)
    if params.strong is None or params.weak is None:
        raise ConfigError("graph_labels needs both thresholds (see suggest_thresholds)", setting="strong")
    strong, weak = float(params.strong), float(params.weak)
    scores = local_prune(ids, scores, params.local_ratio, separate)
    if verdict is not None and separate is not None:
        verdict = np.where(separate, 0, verdict)
    if verdict is not None:
        scores = np.where(verdict > 0, np.maximum(scores, 1.0), np.where(verdict < 0, 0, scores)).astype(np.float32)
    graph = similarity_graph(ids, scores)
    weak_g = _threshold(graph, weak)

    # 1. strong components (optionally over mutual neighbours only: i in j's k nearest and j in i's)
    if separate is not None and separate.any():
        unseparated = np.where(separate, 0, scores).astype(np.float32)
        core = similarity_graph(ids, unseparated, mutual=params.mutual)
    else:
        core = similarity_graph(ids, scores, mutual=True) if params.mutual else graph
    core = _threshold(core, strong)
    if verdict is not None:  # verified pairs are strong edges in both directions, neighbours mutually or not
        core = core.maximum(_threshold(similarity_graph(ids, np.where(verdict > 0, 1.0, 0.0)), 0.5))
    labels = _grow(components(core), graph, weak_g)
    labels = _merge_weak(labels, weak_g, params, notes)
    sizes = np.bincount(labels, minlength=n)

    # 4. GPS
    if lat is not None and lon is not None and np.isfinite(lat).any():
        if params.gps_count > 0 and params.gps_distance > 0:
            tmp = np.where(sizes[labels] >= 2, labels, -1)
            merged_labels, merges = gps_merge(tmp, lat, lon, params.gps_count, params.gps_distance)
            keep = merged_labels >= 0
            labels[keep] = merged_labels[keep]
            notes.append(
                f"GPS merging: {merges} merge(s) of clusters with ≥ {params.gps_count} GPS-tagged photos "
                f"within {params.gps_distance:g} m"
            )
            sizes = np.bincount(labels, minlength=n)
    else:
        notes.append("no GPS positions in the index: GPS merging skipped")

    # 5. leftover singletons: group them among themselves along weak edges
    single = sizes[labels] == 1
    if single.sum() >= 2:
        idx = np.flatnonzero(single)
        sub = components(weak_g[idx][:, idx])
        labels[idx] = labels.max() + 1 + sub
    return relabel(labels, params.min_size)


def _grow(labels: np.ndarray, graph: sparse.csr_matrix, weak_g: sparse.csr_matrix) -> np.ndarray:
    """Step 2: a photo alone in its component joins the cluster of its most similar weak neighbour; repeated so a
    chain of weak links can reach a cluster, but never through a photo that is itself not yet attached."""
    n = len(labels)
    sizes = np.bincount(labels, minlength=n)
    for _ in range(10):
        single = sizes[labels] == 1
        if not single.any():
            break
        w = graph.multiply(weak_g).tocsr()  # weights of weak-or-better edges
        w = sparse.diags(single.astype(np.float32)) @ w @ sparse.diags((~single).astype(np.float32))
        w = w.tocsr()
        w.eliminate_zeros()
        rows = np.flatnonzero(np.diff(w.indptr) > 0)
        if not len(rows):
            break
        best = np.asarray(w[rows].argmax(axis=1)).ravel()
        labels[rows] = labels[best]
        sizes = np.bincount(labels, minlength=n)
    return labels


def _merge_weak(labels: np.ndarray, weak_g: sparse.csr_matrix, params: GraphParams, notes: list[str]) -> np.ndarray:
    """Step 3: merge clusters linked by enough weak edges (relative to the smaller cluster)."""
    n = len(labels)
    sizes = np.bincount(labels, minlength=n)
    big = sizes[labels] >= 2
    cl = np.unique(labels[big])
    if len(cl) <= 1:
        return labels
    index_of = np.full(n, -1)
    index_of[cl] = np.arange(len(cl))
    members = np.flatnonzero(big)
    m = sparse.csr_matrix((np.ones(len(members), np.float32), (members, index_of[labels[members]])), shape=(n, len(cl)))
    links = (m.T @ weak_g.astype(np.float32) @ m).tocoo()
    csize = sizes[cl]
    a, b, cnt = links.row, links.col, links.data  # entry (A, B) counts each A–B edge once
    ok = (a != b) & (cnt >= params.merge_links) & (cnt >= params.merge_ratio * np.minimum(csize[a], csize[b]))
    if ok.any():
        g = sparse.csr_matrix((np.ones(ok.sum(), np.int8), (a[ok], b[ok])), shape=(len(cl), len(cl)))
        comp = components(g)
        notes.append(f"{len(cl) - comp.max() - 1} cluster merge(s) along weak edges")
        labels[members] = cl[comp[index_of[labels[members]]]]
    return labels


# --- retrieval pairs -------------------------------------------------------------------------------------------------


def similar_pairs(
    vectors: np.ndarray, names: list[str], num_matched: int = 10, min_score: float | None = None
) -> list[tuple[str, str, float]]:
    """hloc-style retrieval pairs: each image with its ``num_matched`` most similar others, each unordered pair once
    (named in index order), with the cosine score; ordered by first image, then by decreasing score."""
    if num_matched < 1:
        raise ConfigError(f"number of matched neighbours must be at least 1, got {num_matched}")
    if len(names) < 2:
        raise LookalikeError(f"the index has {len(names)} image(s); pairs need at least 2")
    a, b, s = knn_pairs(vectors, num_matched, min_score)
    return [(names[x], names[y], float(z)) for x, y, z in zip(a, b, s, strict=True)]
