"""Metrics on arrays, shared by evaluation, classification heads, training and the search index tuner.

One implementation of each figure lookalike reports (ECE, top-k accuracy, P@K, class R@K, MAP@R, ANN recall), so a
number in BENCHMARKS.md means the same thing whichever command printed it. Inputs are plain arrays and label lists;
nothing here knows about indexes or files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

KS = (1, 5, 10)


def expected_calibration_error(proba: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """ECE of the top-class confidence: Σ_bins (n_bin / n) · |accuracy_bin − mean confidence_bin|.

    ``proba``: (n, classes) probabilities; ``y_true``: (n,) class indices into proba's columns.
    """
    proba = np.asarray(proba, dtype=np.float64)
    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        return 0.0
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def top_k_accuracy(proba: np.ndarray, y_true: np.ndarray, k: int) -> float:
    """Share of samples whose true class is among the k most probable (k is capped at the number of classes)."""
    proba = np.asarray(proba)
    k = min(k, proba.shape[1])
    top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return float(np.mean((top == np.asarray(y_true)[:, None]).any(axis=1))) if len(proba) else 0.0


def _relevance(query_labels: Sequence[Any], retrieved_labels: np.ndarray) -> np.ndarray:
    retrieved = np.asarray(retrieved_labels, dtype=object)
    q = np.asarray(query_labels, dtype=object).reshape(-1, 1)
    return retrieved == q


def precision_at_k(query_labels: Sequence[Any], retrieved_labels: np.ndarray, k: int) -> float:
    """Mean over queries of (same-class results among the first k) / k; ``retrieved_labels`` is (n, ≥k), best first.

    A missing result (fewer than k in the database) is given as ``None`` and counts as a miss.
    """
    rel = _relevance(query_labels, retrieved_labels)[:, :k]
    return float(rel.sum(axis=1).mean() / k) if len(rel) else 0.0


def recall_at_k(query_labels: Sequence[Any], retrieved_labels: np.ndarray, k: int) -> float:
    """R@K: share of queries with at least one same-class result among the first k."""
    rel = _relevance(query_labels, retrieved_labels)[:, :k]
    return float(rel.any(axis=1).mean()) if len(rel) else 0.0


def map_at_r(query_labels: Sequence[Any], retrieved_labels: np.ndarray, r: Sequence[int] | np.ndarray) -> float:
    """MAP@R: mean over queries of (1/R) Σ_{i≤R} P@i · rel(i), with R = ``r[q]`` same-class items in the database.

    ``retrieved_labels`` must hold at least max(r) results per query (pad with None). Queries with R = 0 are skipped.
    """
    rel = _relevance(query_labels, retrieved_labels)
    r = np.asarray(r, dtype=np.int64)
    scores = []
    for row, big_r in zip(rel, r, strict=True):
        if big_r <= 0:
            continue
        hits = row[:big_r].astype(np.float64)
        if len(hits) < big_r:
            hits = np.concatenate([hits, np.zeros(big_r - len(hits))])
        prec = np.cumsum(hits) / np.arange(1, big_r + 1)
        scores.append(float((prec * hits).sum() / big_r))
    return float(np.mean(scores)) if scores else 0.0


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 (over the classes that occur in truth or prediction), per-class P/R/F1, confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    y_true, y_pred = list(y_true), list(y_pred)
    labels = [c for c in classes if c in set(y_true) | set(y_pred)]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(labels)
        },
        "confusion": {
            "labels": list(classes),
            "matrix": confusion_matrix(y_true, y_pred, labels=list(classes)).tolist(),
        },
    }


def rank_database(
    queries: np.ndarray,
    database: np.ndarray,
    depth: int,
    exclude: Sequence[Sequence[int]] | None = None,
    chunk: int = 256,
) -> np.ndarray:
    """Ids of the ``depth`` most similar database vectors per query (exact inner product), best first; -1 pads."""
    n, m = len(queries), len(database)
    depth = max(1, depth)
    out = np.full((n, depth), -1, dtype=np.int64)
    d = min(depth, m)
    for start in range(0, n, chunk):
        sims = queries[start : start + chunk] @ database.T
        if exclude is not None:
            for j in range(len(sims)):
                ex = list(exclude[start + j])
                if ex:
                    sims[j, ex] = -np.inf
        top = np.argpartition(-sims, d - 1, axis=1)[:, :d] if d < m else np.tile(np.arange(m), (len(sims), 1))
        order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1, kind="stable")
        ranked = np.take_along_axis(top, order, 1)
        if exclude is not None:  # an excluded id sorts last with -inf; drop it
            for j in range(len(ranked)):
                ex = set(exclude[start + j])
                if ex:
                    keep = [i for i in ranked[j] if i not in ex]
                    ranked[j, : len(keep)] = keep
                    ranked[j, len(keep) :] = -1
        out[start : start + len(ranked), :d] = ranked
    return out


def retrieval_metrics(
    query_vectors: np.ndarray,
    query_labels: Sequence[Any],
    db_vectors: np.ndarray,
    db_labels: Sequence[Any],
    ks: Sequence[int] = KS,
    exclude: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """R@K, P@K and MAP@R of queries ranked against a labelled database (unlabelled database rows never match)."""
    db = np.asarray([lab if lab is not None else None for lab in db_labels], dtype=object)
    counts = Counter(lab for lab in db_labels if lab is not None)
    ex = exclude or [[] for _ in range(len(query_vectors))]
    r = np.array(
        [counts.get(q, 0) - sum(1 for i in ex[j] if db[i] == q) for j, q in enumerate(query_labels)], dtype=np.int64
    )
    depth = int(max(max(ks), r.max() if len(r) else 0))
    ids = rank_database(np.asarray(query_vectors, np.float32), np.asarray(db_vectors, np.float32), depth, exclude)
    retrieved = np.where(ids >= 0, db[np.clip(ids, 0, None)], None)
    return {
        "recall_at": {str(k): recall_at_k(query_labels, retrieved, k) for k in ks},
        "precision_at": {str(k): precision_at_k(query_labels, retrieved, k) for k in ks},
        "map_at_r": map_at_r(query_labels, retrieved, r),
    }


def ann_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k ids that were found (ids -1 never count)."""
    hits = [
        len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, int((t >= 0).sum()))
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits)) if hits else 1.0
