"""Verification as the read side uses it: re-ranking search results, one pair drawn for the page, retrieval pairs.

:class:`lookalike.index.Index` delegates here (``rerank``, ``match_pair``, ``pairs``); these functions take the
feature cache, the store's columns and ids, never the facade.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from lookalike.errors import ConfigError, LookalikeError
from lookalike.search import knn_pairs
from lookalike.verify.local_features import FeatureCache, FeatureEngine, Features
from lookalike.verify.match import UNKNOWN, MatchConf, judge, match_points
from lookalike.verify.pairs import VerifiedPair, verified_pairs, verify_against

if TYPE_CHECKING:
    from lookalike.store import Store

RERANK_KEYPOINTS = 512
"""Re-ranking matches each image's strongest 512 keypoints (of 2,048 stored): a sixteenth of the matching work of
all of them, so depth 100 fits a query's time budget (BENCHMARKS.md, places, compares 512 and 1,024)."""


class Ranked(Protocol):
    """What re-ranking needs of a search hit (``lookalike.index.Match`` has it)."""

    id: int
    score: float
    rank: int
    inliers: int | None


M = TypeVar("M", bound=Ranked)


def rerank(query: Features, matches: list[M], features: FeatureCache, verify: MatchConf | None = None) -> list[M]:
    """``matches`` re-ordered by geometric verification against ``query``: verified (inliers ≥ min_inliers)
    first by inliers, ties and the rest by cosine; ranks renumbered, inliers filled in."""
    conf = verify or MatchConf(keypoints=RERANK_KEYPOINTS)
    verdicts = verify_against(query, features, [m.id for m in matches], conf)
    for m, v in zip(matches, verdicts, strict=True):
        m.inliers = None if v.status == UNKNOWN else v.inliers
    good = {m.id for m, v in zip(matches, verdicts, strict=True) if v.verified}
    ordered = sorted(matches, key=lambda m: (m.id not in good, -(m.inliers or 0) if m.id in good else 0, -m.score))
    for r, m in enumerate(ordered, start=1):
        m.rank = r
    return ordered


def match_pair(
    features: FeatureCache,
    sizes: tuple[Sequence[int], Sequence[int]],
    a: int,
    b: int,
    verify: MatchConf | None = None,
) -> dict[str, Any]:
    """The verdict on two indexed images and their tentative matches in each image's own pixels (for drawing):
    ``matches`` rows are (xa, ya, xb, yb, inlier). ``sizes``: the index's width and height columns."""
    widths, heights = sizes
    n = len(widths)
    for i in (a, b):
        if not 0 <= i < n:
            raise LookalikeError(f"no image with id {i}; ids run from 0 to {n - 1}")
    conf = verify or MatchConf()
    features.ensure([a, b])
    fa, fb = features.get(a), features.get(b)
    out: dict[str, Any] = {
        "a": a,
        "b": b,
        "size_a": [widths[a], heights[a]],
        "size_b": [widths[b], heights[b]],
        "matches": [],
    }
    if fa is None or fb is None or not fa.usable or not fb.usable:
        return {**out, "status": UNKNOWN, "inliers": 0, "tentative": 0}
    pa, pb, mask = match_points(fa, fb, conf)
    sa = np.array([widths[a] / fa.size[0], heights[a] / fa.size[1]], np.float32)
    sb = np.array([widths[b] / fb.size[0], heights[b] / fb.size[1]], np.float32)
    rows = np.concatenate([pa * sa, pb * sb, mask[:, None]], axis=1) if len(pa) else np.zeros((0, 5))
    verdict = judge(int(mask.sum()), len(pa), conf)
    return {
        **out,
        "status": verdict.status,
        "inliers": verdict.inliers,
        "tentative": verdict.matches,
        "matches": [[round(float(v), 1) for v in r[:4]] + [bool(r[4])] for r in rows],
    }


def retrieval_pairs(store: Store, num_matched: int = 10, min_score: float | None = None) -> list[VerifiedPair]:
    """hloc-style retrieval pairs: each image with its ``num_matched`` most similar others, each unordered pair once
    (named in index order), with the cosine score, not verified (``verdict`` None)."""
    if num_matched < 1:
        raise ConfigError(f"number of matched neighbours must be at least 1, got {num_matched}", setting="num_matched")
    if len(store) < 2:
        raise LookalikeError(f"the index has {len(store)} image(s); pairs need at least 2")
    a, b, s = knn_pairs(store.vectors, num_matched, min_score)
    names = store.column("path")
    return [VerifiedPair(int(i), int(j), names[i], names[j], float(x)) for i, j, x in zip(a, b, s, strict=True)]


def pairs(
    store: Store,
    num_matched: int = 10,
    *,
    min_score: float | None = None,
    verify: MatchConf | bool = False,
    workers: int | None = None,
    progress: bool = False,
    notes: list[str] | None = None,
    engine: FeatureEngine | None = None,
) -> list[VerifiedPair]:
    """hloc-style retrieval pairs (one type either way: ``VerifiedPair``, unpacking as ``name_a, name_b, score``);
    with ``verify``, every candidate pair verified geometrically (features computed first where missing)."""
    if not verify:
        return retrieval_pairs(store, num_matched, min_score)
    if num_matched < 1:
        raise ConfigError(f"num_matched must be at least 1, got {num_matched}", setting="num_matched")
    conf = MatchConf() if verify is True else verify
    return verified_pairs(
        store, num_matched, min_score=min_score, conf=conf, workers=workers, progress=progress, notes=notes,
        engine=engine,
    )  # fmt: skip
