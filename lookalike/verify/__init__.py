"""Geometric verification: local features (RootSIFT), matching, and two-view geometry by MAGSAC++.

The other half of hloc's pipeline: retrieval (the index's global vectors) proposes candidate pairs, local features
matched between them and fitted to one camera motion decide. Clustering uses verified pairs as its strong edges,
search re-ranks its top results by inliers, and dedupe confirms rotated and mirrored copies with a homography.

Modules: ``features`` (extraction and the cache in the index folder), ``match`` (one pair), ``pairs`` (many pairs,
in parallel batches), ``rerank`` (re-ranking search hits, one pair for drawing, retrieval pairs of one type).
Import the names below from ``lookalike.verify``.
"""

from lookalike.verify.local_features import (
    MIN_KEYPOINTS,
    FeatureCache,
    FeatureConf,
    FeatureEngine,
    Features,
    extract,
)
from lookalike.verify.match import MATCH, NO_MATCH, UNKNOWN, MatchConf, Verdict, judge, match_points, verify
from lookalike.verify.pairs import VerifiedPair, candidate_pairs, verified_pairs, verify_against, verify_pairs
from lookalike.verify.rerank import RERANK_KEYPOINTS, retrieval_pairs

__all__ = [
    "MATCH",
    "MIN_KEYPOINTS",
    "NO_MATCH",
    "RERANK_KEYPOINTS",
    "UNKNOWN",
    "FeatureCache",
    "FeatureConf",
    "FeatureEngine",
    "Features",
    "MatchConf",
    "Verdict",
    "VerifiedPair",
    "candidate_pairs",
    "extract",
    "judge",
    "match_points",
    "retrieval_pairs",
    "verified_pairs",
    "verify",
    "verify_against",
    "verify_pairs",
]
