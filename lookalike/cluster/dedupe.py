"""Near-duplicates: groups of rescaled, recompressed or cropped copies of one photo. Retrieval proposes candidate
pairs (a FAISS kNN graph, cosine ≥ a floor), the pixel check (``lookalike.cluster.pixels``) decides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from lookalike.aggregate import l2_normalize
from lookalike.cluster.labels import components, members
from lookalike.cluster.pixels import pixel_scores, thumbnails
from lookalike.errors import ConfigError
from lookalike.search import knn_graph

DEDUPE_FLOOR = 0.8  # cosine above which a kNN pair is a candidate copy (crops of flowers score from ~0.8)
DEDUPE_PIXEL = 0.9  # aligned pixel NCC at or above which a candidate is a copy (see lookalike.cluster.pixels)


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
    ``pixel``; see lookalike.cluster.pixels). Without ``paths`` or with ``pixel`` 0 the cosine alone decides, which
    then needs a high threshold (~0.95) and still misses most crops.

    Largest group first; each group lists its paths and the lowest and highest cosine inside it."""
    notes = notes if notes is not None else []
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    if not -1.0 <= pixel <= 1.0:
        raise ConfigError(f"pixel threshold is a correlation in [-1, 1] (0 = no pixel check), got {pixel}")
    if len(names) < 2:
        return []
    ids, scores = knn_graph(vectors, k)
    n = len(names)
    i = np.repeat(np.arange(n), ids.shape[1])
    j, s = ids.ravel(), scores.ravel()
    ok = (j >= 0) & (j != i) & (s >= threshold)
    pairs = np.unique(np.stack([np.minimum(i, j)[ok], np.maximum(i, j)[ok]], axis=1), axis=0)
    if paths is not None and pixel > 0 and len(pairs):
        used = np.unique(pairs)
        coarse, fine, bad = thumbnails([paths[u] for u in used])
        row = np.full(n, -1)
        row[used] = np.arange(len(used))
        local = row[pairs]
        readable = ~np.isin(local, bad).any(axis=1)
        if not readable.all():
            notes.append(f"{len(bad)} image(s) could not be read for the pixel check; their pairs are left out")
        ncc = pixel_scores(coarse, fine, local[readable])
        candidates = len(pairs)
        pairs = pairs[readable][ncc >= pixel]
        notes.append(f"{len(pairs)} of {candidates} candidate pairs (cosine ≥ {threshold:g}) line up pixel for pixel")
    g = sparse.csr_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    comp = components(g)
    sizes = np.bincount(comp)
    members_of = members(np.where(sizes[comp] >= 2, comp, -1))
    groups = []
    for group in members_of.values():
        x = l2_normalize(np.asarray(vectors[group], dtype=np.float32))
        sims = x @ x.T  # a group is small: its own similarity matrix is cheap
        off = sims[~np.eye(len(group), dtype=bool)]
        groups.append(
            {
                "size": len(group),
                "paths": [names[m] for m in group],
                "min_score": round(float(off.min()), 4),
                "max_score": round(float(off.max()), 4),
            }
        )
    groups.sort(key=lambda g: (-g["size"], g["paths"][0]))
    return groups
