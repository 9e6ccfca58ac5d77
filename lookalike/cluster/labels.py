"""Label arrays (one cluster id per image, -1 = noise): members per cluster, connected components, renumbering, and
scores against known labels. Shared by the graph method, GPS merging, near-duplicates and the result."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components


def components(graph: sparse.csr_matrix) -> np.ndarray:
    """Connected-component id of each node of an undirected sparse graph."""
    return connected_components(graph, directed=False)[1].astype(np.int64)


def members(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Members of each label ≥ 0 in one sort (a mask per cluster would cost clusters × images)."""
    order = np.argsort(labels, kind="stable")
    sl = labels[order]
    starts = np.flatnonzero(np.r_[True, sl[1:] != sl[:-1]]) if len(sl) else np.array([], dtype=np.int64)
    ends = np.r_[starts[1:], len(sl)]
    return {int(sl[s]): order[s:e] for s, e in zip(starts, ends, strict=True) if sl[s] >= 0}


def relabel(labels: np.ndarray, min_size: int) -> np.ndarray:
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
