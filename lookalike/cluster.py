"""Grouping images without labels: similarity pairs, graph clustering with GPS merging, HDBSCAN, near-duplicates,
and export of the result as folders, contact sheets and an HTML page.

Everything starts from a k-nearest-neighbour graph (``search.knn_graph``: FAISS, batched), never an N×N similarity
matrix, so memory grows as N·k and a million photos fit on a laptop.

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

import html
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.cluster import HDBSCAN

from lookalike.aggregate import l2_normalize
from lookalike.errors import LookalikeError
from lookalike.search import knn_graph

if TYPE_CHECKING:
    from lookalike.index import Index

CLUSTERS_FILE = "clusters.json"
EXPORT_MARKER = ".lookalike-export.json"
EARTH_RADIUS_M = 6_371_008.8

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


def local_prune(ids: np.ndarray, scores: np.ndarray, ratio: float = LOCAL_RATIO) -> np.ndarray:
    """kNN scores with edges that are weak *for their endpoints* zeroed: kept where cosine ≥ ratio × the smaller of
    the two endpoints' nearest-neighbour similarities.

    WHY: one global threshold cannot serve a collection whose groups differ in tightness. In a folder of copies
    (crops, rescales, recompressions) every photo's best match scores ~0.99, while a different photo of the same
    subject scores 0.87 — above any global threshold that still keeps loose groups, so single-linkage components
    chain the copy groups into subject-sized blobs. Scaling each edge by its endpoints' own best match (local
    scaling, as in self-tuning spectral clustering) cuts those bridges and leaves edges inside loose groups, whose
    members' best matches are themselves loose. 0 turns it off.
    """
    if ratio <= 0:
        return scores
    top1 = np.where(ids[:, 0] >= 0, scores[:, 0], np.inf)
    j = np.where(ids >= 0, ids, 0)
    ref = np.minimum(top1[:, None], top1[j])
    return np.where(scores >= ratio * ref, scores, 0).astype(scores.dtype, copy=False)


def _threshold(graph: sparse.csr_matrix, value: float) -> sparse.csr_matrix:
    g = graph.copy()
    g.data = np.where(g.data >= value, 1, 0).astype(np.int8)
    g.eliminate_zeros()
    return g


def _components(graph: sparse.csr_matrix) -> np.ndarray:
    return connected_components(graph, directed=False)[1].astype(np.int64)


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


# --- GPS -------------------------------------------------------------------------------------------------------------


def valid_gps(lat: list[Any] | np.ndarray, lon: list[Any] | np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(lat, lon, rejected): float arrays with NaN where missing; values that are not numbers or out of range
    (|lat| > 90, |lon| > 180) become NaN too and are counted, so one bad EXIF tag cannot pull a cluster centre."""

    def num(v: Any) -> float:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return float("inf") if v is not None else float("nan")
        return f

    la = np.array([num(v) for v in lat], dtype=np.float64)
    lo = np.array([num(v) for v in lon], dtype=np.float64)
    present = ~(np.isnan(la) & np.isnan(lo))
    ok = np.isfinite(la) & np.isfinite(lo) & (np.abs(la) <= 90) & (np.abs(lo) <= 180)
    rejected = int((present & ~ok).sum())
    la[~ok] = np.nan
    lo[~ok] = np.nan
    return la, lo, rejected


def gps_centre(lat: np.ndarray, lon: np.ndarray) -> tuple[float, float] | None:
    """Mean position on the sphere (mean of unit vectors), so clusters across the antimeridian come out right."""
    ok = np.isfinite(lat) & np.isfinite(lon)
    if not ok.any():
        return None
    la, lo = np.radians(lat[ok]), np.radians(lon[ok])
    v = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=1).mean(axis=0)
    r = np.linalg.norm(v)
    if r < 1e-12:
        return None
    return float(np.degrees(np.arcsin(v[2] / r))), float(np.degrees(np.arctan2(v[1], v[0])))


def haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in metres between two (lat, lon) points in degrees."""
    la1, lo1, la2, lo2 = map(np.radians, (a[0], a[1], b[0], b[1]))
    h = np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin((lo2 - lo1) / 2) ** 2
    return float(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(min(1.0, h))))


def _gps_merge(
    labels: np.ndarray, lat: np.ndarray, lon: np.ndarray, count: int, distance: float
) -> tuple[np.ndarray, int]:
    """Union clusters having ≥ ``count`` GPS-tagged photos whose centres are within ``distance`` metres."""
    from sklearn.neighbors import BallTree

    tagged = np.bincount(labels[(labels >= 0) & np.isfinite(lat)], minlength=int(labels.max(initial=-1)) + 1)
    centres, which = [], []
    groups = _groups(labels)
    for c in np.flatnonzero(tagged >= max(1, count)):
        members = groups[int(c)]
        centre = gps_centre(lat[members], lon[members])
        if centre is not None:
            centres.append(centre)
            which.append(int(c))
    if len(centres) < 2:
        return labels, 0
    tree = BallTree(np.radians(np.array(centres)), metric="haversine")
    near = tree.query_radius(np.radians(np.array(centres)), r=distance / EARTH_RADIUS_M)
    rows = np.concatenate([np.full(len(nb), i) for i, nb in enumerate(near)])
    cols = np.concatenate(near)
    g = sparse.csr_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(len(centres),) * 2)
    comp = _components(g)
    first_of: dict[int, int] = {}
    remap = np.arange(int(labels.max()) + 1)
    for i, c in enumerate(which):
        remap[c] = which[first_of.setdefault(int(comp[i]), i)]
    out = np.where(labels >= 0, remap[np.maximum(labels, 0)], -1)
    return out, len(which) - len(np.unique(comp))


# --- graph clustering ------------------------------------------------------------------------------------------------


@dataclass
class GraphParams:
    """Knobs of the graph method; None thresholds are read off the similarity distribution."""

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


def _relabel(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Clusters numbered 0.. by decreasing size (ties: first member), those below ``min_size`` become noise (-1)."""
    out = np.full(len(labels), -1, dtype=np.int64)
    valid = labels >= 0
    if not valid.any():
        return out
    _, first, inverse, counts = np.unique(labels[valid], return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((first, -counts))
    keep = counts[order] >= max(1, min_size)
    new_id = np.full(len(counts), -1, dtype=np.int64)
    new_id[order[keep]] = np.arange(int(keep.sum()))
    out[valid] = new_id[inverse]
    return out


def _groups(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Members of each label ≥ 0 in one sort (a mask per cluster would cost clusters × images)."""
    order = np.argsort(labels, kind="stable")
    sl = labels[order]
    starts = np.flatnonzero(np.r_[True, sl[1:] != sl[:-1]]) if len(sl) else np.array([], dtype=np.int64)
    ends = np.r_[starts[1:], len(sl)]
    return {int(sl[s]): order[s:e] for s, e in zip(starts, ends, strict=True) if sl[s] >= 0}


def graph_labels(
    ids: np.ndarray,
    scores: np.ndarray,
    params: GraphParams,
    *,
    lat: np.ndarray | None = None,
    lon: np.ndarray | None = None,
    notes: list[str] | None = None,
) -> np.ndarray:
    """Labels (-1 = noise) from a kNN graph; ``params.strong``/``weak`` must be set (see ``suggest_thresholds``)."""
    notes = notes if notes is not None else []
    n = len(ids)
    strong, weak = float(params.strong), float(params.weak)  # type: ignore[arg-type]
    if weak > strong:
        raise LookalikeError(f"--weak ({weak}) must not be above --strong ({strong})")
    if not 0 <= params.local_ratio <= 1:
        raise LookalikeError(f"--local-ratio must be between 0 and 1, got {params.local_ratio}")
    scores = local_prune(ids, scores, params.local_ratio)
    graph = similarity_graph(ids, scores)
    weak_g = _threshold(graph, weak)

    # 1. strong components (optionally over mutual neighbours only: i in j's k nearest and j in i's)
    core = similarity_graph(ids, scores, mutual=True) if params.mutual else graph
    labels = _components(_threshold(core, strong))
    sizes = np.bincount(labels, minlength=n)

    # 2. grow: a photo alone in its component joins the cluster of its most similar weak neighbour; repeated so a
    # chain of weak links can reach a cluster, but never through a photo that is itself not yet attached.
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

    # 3. merge clusters linked by enough weak edges (relative to the smaller cluster)
    big = sizes[labels] >= 2
    cl = np.unique(labels[big])
    if len(cl) > 1:
        index_of = np.full(n, -1)
        index_of[cl] = np.arange(len(cl))
        members = np.flatnonzero(big)
        m = sparse.csr_matrix(
            (np.ones(len(members), np.float32), (members, index_of[labels[members]])), shape=(n, len(cl))
        )
        links = (m.T @ weak_g.astype(np.float32) @ m).tocoo()
        csize = sizes[cl]
        a, b, cnt = links.row, links.col, links.data  # entry (A, B) counts each A–B edge once
        ok = (a != b) & (cnt >= params.merge_links) & (cnt >= params.merge_ratio * np.minimum(csize[a], csize[b]))
        if ok.any():
            g = sparse.csr_matrix((np.ones(ok.sum(), np.int8), (a[ok], b[ok])), shape=(len(cl), len(cl)))
            comp = _components(g)
            notes.append(f"{len(cl) - comp.max() - 1} cluster merge(s) along weak edges")
            labels[members] = cl[comp[index_of[labels[members]]]]
            sizes = np.bincount(labels, minlength=n)

    # 4. GPS
    if lat is not None and lon is not None and np.isfinite(lat).any():
        if params.gps_count > 0 and params.gps_distance > 0:
            tmp = np.where(sizes[labels] >= 2, labels, -1)
            merged_labels, merges = _gps_merge(tmp, lat, lon, params.gps_count, params.gps_distance)
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
        sub = _components(weak_g[idx][:, idx])
        labels[idx] = labels.max() + 1 + sub
    return _relabel(labels, params.min_size)


# --- results ---------------------------------------------------------------------------------------------------------


@dataclass
class ClusterResult:
    """Labels over the index's images plus everything a person or the server shows about them."""

    labels: np.ndarray
    names: list[str]
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    lat: np.ndarray | None = None
    lon: np.ndarray | None = None

    def clusters(self) -> list[dict[str, Any]]:
        out = []
        groups = _groups(self.labels)
        for c in range(int(self.labels.max(initial=-1)) + 1):
            members = groups.get(c, np.array([], dtype=np.int64))
            gps = None
            if self.lat is not None and self.lon is not None:
                centre = gps_centre(self.lat[members], self.lon[members])
                if centre is not None:
                    tagged = int(np.isfinite(self.lat[members]).sum())
                    gps = {"lat": round(centre[0], 7), "lon": round(centre[1], 7), "count": tagged}
            out.append({"id": c + 1, "size": len(members), "paths": [self.names[i] for i in members], "gps": gps})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "clusters": self.clusters(),
            "noise": [self.names[i] for i in np.flatnonzero(self.labels < 0)],
            "metrics": self.metrics,
            "method": self.method,
            "params": self.params,
            "notes": self.notes,
        }


def label_metrics(labels: np.ndarray, truth: list[str | None]) -> dict[str, float]:
    """ARI, NMI, homogeneity and completeness against known labels (images without a label are left out).

    Noise counts as one singleton cluster per image: calling everything noise scores homogeneity 1 but ARI ≈ 0,
    which is what it deserves; lumping noise into one cluster would instead reward it as a (bad) cluster."""
    from sklearn import metrics as skm

    keep = np.array([t is not None for t in truth])
    if keep.sum() < 2 or len({t for t in truth if t is not None}) < 2:
        return {}
    pred = labels.copy()
    noise = np.flatnonzero(pred < 0)
    pred[noise] = pred.max(initial=-1) + 1 + np.arange(len(noise))
    y = np.array([t if t is not None else "" for t in truth])[keep]
    p = pred[keep]
    return {
        "ari": round(float(skm.adjusted_rand_score(y, p)), 4),
        "nmi": round(float(skm.normalized_mutual_info_score(y, p)), 4),
        "homogeneity": round(float(skm.homogeneity_score(y, p)), 4),
        "completeness": round(float(skm.completeness_score(y, p)), 4),
    }


def _basic_metrics(labels: np.ndarray, seconds: float) -> dict[str, Any]:
    return {
        "images": len(labels),
        "clusters": int(labels.max(initial=-1)) + 1,
        "clustered": int((labels >= 0).sum()),
        "noise": int((labels < 0).sum()),
        "seconds": round(seconds, 3),
    }


def _index_gps(index: Index, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    cols = index.store.metadata().column_names
    if "gps_lat" not in cols or "gps_lon" not in cols:
        n = len(index)
        return np.full(n, np.nan), np.full(n, np.nan)
    lat, lon, rejected = valid_gps(index.store.column("gps_lat"), index.store.column("gps_lon"))
    if rejected:
        notes.append(f"{rejected} photo(s) with malformed or out-of-range GPS ignored")
    return lat, lon


def _check_size(index: Index) -> None:
    if len(index) < 2:
        raise LookalikeError(
            f"the index has {len(index)} image(s); clustering needs at least 2 — add photos and run `lookalike index`"
        )


def suggest(index: Index, k: int = 10) -> Suggestion:
    """The similarity distribution of the index's kNN graph and the thresholds the graph method would use."""
    _check_size(index)
    vectors = index.vectors
    return suggest_thresholds(knn_graph(vectors, k)[1], vectors)


def cluster_index(
    index: Index,
    method: str = "graph",
    *,
    params: GraphParams | None = None,
    hdbscan_size: int = 5,
    pca: int | None = None,
    save: bool = True,
) -> ClusterResult:
    """Cluster an index's images; saves the result as ``clusters.json`` in the index folder (see load_clusters)."""
    if method not in ("graph", "hdbscan"):
        raise LookalikeError(f"--method must be 'graph' or 'hdbscan', got {method!r}")
    _check_size(index)
    params = params or GraphParams()
    if params.k < 1:
        raise LookalikeError(f"--k must be at least 1, got {params.k}")
    if params.min_size < 1:
        raise LookalikeError(f"--min-size must be at least 1, got {params.min_size}")
    if params.gps_distance < 0 or params.gps_count < 0:
        raise LookalikeError("--gps-distance and --gps-count must not be negative")
    started = time.perf_counter()
    notes: list[str] = []
    lat, lon = _index_gps(index, notes)
    vectors = index.vectors
    used: dict[str, Any]
    if method == "graph":
        ids, scores = knn_graph(vectors, params.k)
        s = suggest_thresholds(scores, vectors)
        strong = s.strong if params.strong is None else params.strong
        weak = min(s.weak, strong) if params.weak is None else params.weak
        if params.strong is None or params.weak is None:
            notes.append(f"thresholds from the similarity distribution: strong {strong:.4f}, weak {weak:.4f}")
        p = GraphParams(**{**params.__dict__, "strong": strong, "weak": weak})
        labels = graph_labels(ids, scores, p, lat=lat, lon=lon, notes=notes)
        used = {"method": "graph", **p.__dict__}
    else:
        labels = _relabel(
            hdbscan_labels(vectors, hdbscan_size, second_min_size=max(2, params.min_size), pca=pca), params.min_size
        )
        used = {"method": "hdbscan", "hdbscan_size": hdbscan_size, "min_size": params.min_size, "pca": pca}
    metrics = _basic_metrics(labels, time.perf_counter() - started)
    metrics.update(label_metrics(labels, index.labels))
    result = ClusterResult(labels, index.names, method, used, notes, metrics, lat, lon)
    if save:
        from lookalike.store import atomic_write_json

        atomic_write_json(index.store.path / CLUSTERS_FILE, result.to_dict())
    return result


def load_clusters(index: Index | str | os.PathLike[str]) -> dict[str, Any] | None:
    """The last saved ``lookalike cluster`` result of an index (an Index or its folder), or None if there is none."""
    folder = Path(index.store.path) if hasattr(index, "store") else Path(index)  # type: ignore[union-attr]
    path = folder / CLUSTERS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LookalikeError(f"{path} is unreadable ({exc}); run `lookalike cluster` again") from None


# --- pairs and near-duplicates ---------------------------------------------------------------------------------------


def similar_pairs(
    vectors: np.ndarray, names: list[str], num_matched: int = 10, min_score: float | None = None
) -> list[tuple[str, str, float]]:
    """hloc-style retrieval pairs: each image with its ``num_matched`` most similar others, each unordered pair once
    (named in index order), with the cosine score; ordered by first image, then by decreasing score."""
    if num_matched < 1:
        raise LookalikeError(f"--num-matched must be at least 1, got {num_matched}")
    if len(names) < 2:
        raise LookalikeError(f"the index has {len(names)} image(s); pairs need at least 2")
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
    return [(names[a[x]], names[b[x]], float(s[x])) for x in order]


DEDUPE_FLOOR = 0.8  # cosine above which a kNN pair is a candidate copy (crops of flowers score from ~0.8)
DEDUPE_PIXEL = 0.9  # aligned pixel NCC at or above which a candidate is a copy (see lookalike.verify)


def near_duplicates(
    vectors: np.ndarray,
    names: list[str],
    threshold: float = DEDUPE_FLOOR,
    k: int = 10,
    *,
    paths: list[Path] | None = None,
    pixel: float = DEDUPE_PIXEL,
    notes: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Groups of near-identical images (rescaled, recompressed, cropped copies): connected components over kNN pairs
    with cosine ≥ ``threshold`` that, given ``paths`` and ``pixel`` > 0, also line up pixel for pixel (aligned NCC ≥
    ``pixel``; see lookalike.verify). Without ``paths`` or with ``pixel`` 0 the cosine alone decides, which then
    needs a high threshold (~0.95) and still misses most crops.

    Largest group first; each group lists its paths and the lowest and highest cosine inside it."""
    notes = notes if notes is not None else []
    if not -1.0 <= threshold <= 1.0:
        raise LookalikeError(f"--threshold is a cosine similarity in [-1, 1], got {threshold}")
    if not -1.0 <= pixel <= 1.0:
        raise LookalikeError(f"--pixel is a correlation in [-1, 1] (0 = no pixel check), got {pixel}")
    if len(names) < 2:
        return []
    ids, scores = knn_graph(vectors, k)
    n = len(names)
    i = np.repeat(np.arange(n), ids.shape[1])
    j, s = ids.ravel(), scores.ravel()
    ok = (j >= 0) & (j != i) & (s >= threshold)
    pairs = np.unique(np.stack([np.minimum(i, j)[ok], np.maximum(i, j)[ok]], axis=1), axis=0)
    if paths is not None and pixel > 0 and len(pairs):
        from lookalike.verify import pair_scores, thumbnails

        used = np.unique(pairs)
        coarse, fine, bad = thumbnails([paths[u] for u in used])
        row = np.full(n, -1)
        row[used] = np.arange(len(used))
        local = row[pairs]
        readable = ~np.isin(local, bad).any(axis=1)
        if not readable.all():
            notes.append(f"{len(bad)} image(s) could not be read for the pixel check; their pairs are left out")
        ncc = pair_scores(coarse, fine, local[readable])
        candidates = len(pairs)
        pairs = pairs[readable][ncc >= pixel]
        notes.append(f"{len(pairs)} of {candidates} candidate pairs (cosine ≥ {threshold:g}) line up pixel for pixel")
    g = sparse.csr_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    comp = _components(g)
    sizes = np.bincount(comp)
    members_of = _groups(np.where(sizes[comp] >= 2, comp, -1))
    groups = []
    for members in members_of.values():
        x = l2_normalize(np.asarray(vectors[members], dtype=np.float32))
        sims = x @ x.T  # a group is small: its own similarity matrix is cheap
        off = sims[~np.eye(len(members), dtype=bool)]
        groups.append(
            {
                "size": len(members),
                "paths": [names[m] for m in members],
                "min_score": round(float(off.min()), 4),
                "max_score": round(float(off.max()), 4),
            }
        )
    groups.sort(key=lambda g: (-g["size"], g["paths"][0]))
    return groups


# --- export ----------------------------------------------------------------------------------------------------------


def contact_sheet(
    paths: list[Path],
    out: str | os.PathLike[str],
    *,
    title: str = "",
    thumb: int = 128,
    columns: int = 8,
    limit: int = 64,
) -> Path:
    """One PNG of a cluster's thumbnails (first ``limit``), so a person can judge a cluster at a glance."""
    from PIL import Image, ImageDraw

    from lookalike.plots import thumbnail

    shown = paths[:limit]
    cols = max(1, min(columns, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    head = 22 if title else 0
    sheet = Image.new("RGB", (cols * (thumb + 4) + 4, rows * (thumb + 4) + 4 + head), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if title:
        extra = f"  (first {limit} of {len(paths)})" if len(paths) > limit else ""
        draw.text((6, 5), title + extra, fill=(0, 0, 0))
    for i, p in enumerate(shown):
        tile = Image.fromarray(thumbnail(p, thumb))
        x = 4 + (i % cols) * (thumb + 4) + (thumb - tile.width) // 2
        y = head + 4 + (i // cols) * (thumb + 4) + (thumb - tile.height) // 2
        sheet.paste(tile, (x, y))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def _same_file(src: Path, dst: Path, mode: str) -> bool:
    if not dst.exists() and not dst.is_symlink():
        return False
    if mode == "symlink":
        return dst.is_symlink() and os.readlink(dst) == str(src)
    if dst.is_symlink():
        return False
    a, b = src.stat(), dst.stat()
    if mode == "hardlink":
        return a.st_ino == b.st_ino and a.st_dev == b.st_dev
    return a.st_size == b.st_size and int(a.st_mtime) == int(b.st_mtime)


def _place(src: Path, dst: Path, mode: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if mode == "symlink":
        dst.symlink_to(src)
    elif mode == "hardlink":
        try:
            os.link(src, dst)
        except OSError as exc:
            raise LookalikeError(
                f"cannot hard-link {src} into {dst.parent} ({exc.strerror}); hard links need the same file system — "
                "use --link (symbolic) or copy"
            ) from None
    else:
        shutil.copy2(src, dst)


def export_clusters(
    result: ClusterResult | dict[str, Any],
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    mode: str = "copy",
    sheets: bool = True,
) -> dict[str, Any]:
    """Write ``out_dir/cluster_0001/<relative path>`` (noise under ``noise/``), ``clusters.json``, one contact sheet
    per cluster (``sheets/cluster_0001.png``) and ``index.html``.

    Idempotent: a marker file lists what the last export wrote; a re-run removes files no longer wanted (a photo
    that moved to another cluster), leaves unchanged ones alone and adds the rest, so nothing is duplicated or lost.
    A folder that exists, is not empty and has no marker is refused: it is somebody else's and we delete files."""
    if mode not in ("copy", "symlink", "hardlink"):
        raise LookalikeError(f"export mode must be copy, symlink or hardlink, got {mode!r}")
    data = result.to_dict() if isinstance(result, ClusterResult) else result
    root = Path(root).resolve()
    out = Path(out_dir)
    marker = out / EXPORT_MARKER
    if out.exists() and not out.is_dir():
        raise LookalikeError(f"--export {out} is a file; give a folder (new, empty, or one lookalike exported to)")
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise LookalikeError(
            f"--export {out} exists and was not written by lookalike (no {EXPORT_MARKER}); "
            "choose a new or empty folder so none of your files are overwritten"
        )
    try:
        previous = set(json.loads(marker.read_text()).get("files", [])) if marker.is_file() else set()
    except (OSError, ValueError):
        previous = set()
    out.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, Path] = {}
    for c in data["clusters"]:
        for name in c["paths"]:
            wanted[f"cluster_{c['id']:04d}/{name}"] = root / name
    for name in data["noise"]:
        wanted[f"noise/{name}"] = root / name
    missing = [rel for rel, src in wanted.items() if not src.is_file()]
    for rel in missing:
        del wanted[rel]
    removed = 0
    for rel in sorted(previous - set(wanted)):
        p = out / rel
        if p.is_file() or p.is_symlink():
            p.unlink()
            removed += 1
    written = kept = 0
    for rel, src in wanted.items():
        dst = out / rel
        if _same_file(src, dst, mode):
            kept += 1
            continue
        _place(src, dst, mode)
        written += 1
    # empty folders left by removed files
    for d in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(d.iterdir()):
            d.rmdir()
    sheet_files = []
    if sheets:
        for c in data["clusters"]:
            rel = f"sheets/cluster_{c['id']:04d}.png"
            contact_sheet([root / p for p in c["paths"]], out / rel, title=f"cluster {c['id']}: {c['size']} photos")
            sheet_files.append(rel)
    from lookalike.store import atomic_write_bytes, atomic_write_json

    atomic_write_json(out / "clusters.json", data)
    atomic_write_bytes(out / "index.html", _html(data).encode())
    atomic_write_json(marker, {"format": 1, "root": str(root), "mode": mode, "files": sorted(wanted)})
    return {
        "out": str(out),
        "files": len(wanted),
        "written": written,
        "unchanged": kept,
        "removed": removed,
        "missing": missing,
        "sheets": len(sheet_files),
    }


def _html(data: dict[str, Any]) -> str:
    rows = []
    for c in data["clusters"]:
        gps = f"{c['gps']['lat']:.6f}, {c['gps']['lon']:.6f}" if c.get("gps") else ""
        name = f"cluster_{c['id']:04d}"
        rows.append(
            f"<section><h2><a href='{name}/'>{name}</a> — {c['size']} photos"
            + (f" — GPS {html.escape(gps)}" if gps else "")
            + f"</h2><img src='sheets/{name}.png' alt='{name}' loading='lazy'></section>"
        )
    metrics = ", ".join(f"{k} {v}" for k, v in data.get("metrics", {}).items())
    return (
        "<!doctype html><meta charset='utf-8'><title>lookalike clusters</title>"
        "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%}</style>"
        f"<h1>{len(data['clusters'])} clusters, {len(data['noise'])} unclustered</h1>"
        f"<p>{html.escape(metrics)}</p>" + "".join(rows) + "</html>\n"
    )
