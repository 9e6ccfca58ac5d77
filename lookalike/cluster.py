"""Grouping images without labels.

On L2-normalised vectors Euclidean distance is a monotone function of cosine similarity (d² = 2 − 2·cos), so
density clustering runs with Euclidean trees instead of a brute-force cosine matrix.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import HDBSCAN

from lookalike.aggregate import l2_normalize


def hdbscan_labels(
    vectors: np.ndarray,
    min_size: int = 5,
    *,
    min_samples: int | None = None,
    second_pass: bool = True,
    second_min_size: int = 2,
) -> np.ndarray:
    """Cluster labels (-1 = noise). The second pass (seed packed-scenes) re-runs HDBSCAN on the first pass's noise
    with a minimum size of 2, rescuing small groups that the first pass could not tell from noise."""
    x = l2_normalize(np.asarray(vectors, dtype=np.float64))
    n = len(x)
    labels = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return labels
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
