"""Nearest-neighbour search over L2-normalised vectors with FAISS (inner product = cosine).

Exact search (``IndexFlatIP``) is the default: at up to a few hundred thousand vectors it is fast enough and has
no recall to lose. Restricting results to a subset (one class, or all the other classes) uses FAISS ID selectors so
the restriction costs no extra copy of the vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np

from lookalike.errors import LookalikeError


class VectorSearch:
    """Top-k by cosine over a fixed set of vectors, with optional allow-lists and per-query exclusions."""

    def __init__(self, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise LookalikeError(f"vectors must be 2-D, got shape {vectors.shape}")
        self.dim = vectors.shape[1]
        self.index = faiss.IndexFlatIP(self.dim)
        if len(vectors):
            self.index.add(vectors)

    def __len__(self) -> int:
        return self.index.ntotal

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
            allowed = np.ascontiguousarray(allowed, dtype=np.int64)
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
            s, i = self.index.search(queries, kk, params=params)
        if not extra:
            m = min(k, kk)
            scores[:, :m], ids[:, :m] = s[:, :m], i[:, :m]
            return scores, ids
        for row in range(n):
            banned = set(exclude[row]) if exclude else set()
            keep = [j for j in range(kk) if i[row, j] >= 0 and i[row, j] not in banned][:k]
            scores[row, : len(keep)] = s[row, keep]
            ids[row, : len(keep)] = i[row, keep]
        return scores, ids


def knn_graph(vectors: np.ndarray, k: int, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Each vector's k nearest other vectors: (ids, scores), shape (N, k), self excluded; never an N×N matrix."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    k = min(k, max(n - 1, 0))
    index = VectorSearch(vectors)
    all_ids = np.full((n, k), -1, dtype=np.int64)
    all_scores = np.full((n, k), -np.inf, dtype=np.float32)
    if k == 0:
        return all_ids, all_scores
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        s, i = index.index.search(vectors[start:stop], k + 1)
        for row in range(stop - start):
            me = start + row
            keep = [j for j in range(k + 1) if i[row, j] != me and i[row, j] >= 0][:k]
            all_ids[me, : len(keep)] = i[row, keep]
            all_scores[me, : len(keep)] = s[row, keep]
    return all_ids, all_scores
