"""Matching two images' local features and verifying the matches geometrically.

Tentative matches are mutual nearest neighbours that also pass Lowe's ratio test (hloc's ``NN-ratio`` matcher for
SIFT); a robust fit of the two-view geometry by OpenCV's USAC with MAGSAC++ scoring (``cv2.USAC_MAGSAC``) then keeps
the matches consistent with one camera motion. The inlier count is the pair's score: photos of one building from
two viewpoints share tens to hundreds of inliers, two look-alike façades a handful that chance explains.

The fundamental matrix fits any rigid 3-D scene seen by two cameras; a homography fits flat scenes and copies of
one photo (rotated, mirrored, cropped) and is the stricter test there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lookalike.errors import ConfigError
from lookalike.verify.local_features import Features

GEOMETRIES = ("fundamental", "homography")
MATCH, NO_MATCH, UNKNOWN = "match", "no-match", "unknown"
MAX_ITERATIONS = 1000
"""MAGSAC++ sampling rounds. A real pair's model is found in far fewer (its matches are mostly inliers); a pair of
unrelated photos runs to the cap, so the cap sets the cost of a "no". On the places benchmark's kNN pairs 1,000
verified exactly the pairs 10,000 did, at a third of the time."""


@dataclass(frozen=True)
class MatchConf:
    """How a pair is matched and verified (hloc-style conf: every knob in one place, stored with results)."""

    ratio: float = 0.8  # Lowe's ratio test on descriptor distances
    min_inliers: int = 15  # inliers at or above which a pair is verified as the same place
    # ... that are also at least this fraction of the tentative matches. Chance alone gives a fundamental matrix
    # ~8% of many random matches (hundreds of look-alike texture matches → 20+ "inliers"); real pairs of the places
    # benchmark have ≥ 27% (COLMAP's two-view default is 25%).
    min_ratio: float = 0.15
    geometry: str = "fundamental"
    threshold: float = 1.5  # MAGSAC's largest noise sigma, pixels at the extraction scale
    keypoints: int | None = None  # match only each image's strongest N keypoints (faster; None = all stored)

    def __post_init__(self) -> None:
        if not 0 < self.ratio <= 1:
            raise ConfigError(f"ratio must be in (0, 1], got {self.ratio}", setting="ratio")
        if self.min_inliers < 4:
            raise ConfigError(f"min_inliers must be at least 4, got {self.min_inliers}", setting="min_inliers")
        if not 0 <= self.min_ratio <= 1:
            raise ConfigError(f"min_ratio must be in [0, 1], got {self.min_ratio}", setting="min_ratio")
        if self.geometry not in GEOMETRIES:
            raise ConfigError(
                f"geometry must be one of {', '.join(GEOMETRIES)}, got {self.geometry!r}", setting="geometry"
            )
        if self.threshold <= 0:
            raise ConfigError(f"threshold must be positive, got {self.threshold}", setting="threshold")
        if self.keypoints is not None and self.keypoints < 8:
            raise ConfigError(f"keypoints must be at least 8, got {self.keypoints}", setting="keypoints")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    """A verified pair: ``status`` is "match" (inliers ≥ min_inliers and ≥ min_ratio of the tentative matches),
    "no-match", or "unknown" (an image had too few keypoints to tell: flat, blank, tiny, unreadable)."""

    status: str
    inliers: int = 0
    matches: int = 0  # tentative matches before the geometric fit

    @property
    def inlier_ratio(self) -> float:
        return self.inliers / self.matches if self.matches else 0.0

    @property
    def verified(self) -> bool:
        return self.status == MATCH

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "inliers": self.inliers,
            "matches": self.matches,
            "inlier_ratio": round(self.inlier_ratio, 4),
        }


def mutual_matches(da: np.ndarray, db: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ia, ib) of mutual nearest neighbours passing the ratio test, for L2-unit descriptors.

    One matrix product gives every similarity; on unit vectors squared distance is 2 − 2·cos, so the ratio test
    on distances is a test on similarities, with no square roots of the whole matrix."""
    if len(da) < 2 or len(db) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sim = da @ db.T
    rows = np.arange(len(da))
    best = sim.argmax(axis=1)
    s1 = sim[rows, best].copy()
    sim[rows, best] = -np.inf
    s2 = sim.max(axis=1)
    sim[rows, best] = s1
    d1 = np.maximum(2 - 2 * s1, 0)
    d2 = np.maximum(2 - 2 * s2, 0)
    rows = rows[d1 <= ratio * ratio * d2]
    # the mutual check reads only the columns of the few matches left (a column-wise argmax of the whole matrix
    # walks it against its memory order and costs as much as the product)
    mutual = sim[:, best[rows]].argmax(axis=0) == rows
    return rows[mutual], best[rows[mutual]]


def rootsift_rows(sift: np.ndarray) -> np.ndarray:
    """L2-unit RootSIFT of raw SIFT rows of any leading shape (zero rows stay zero)."""
    d = sift.astype(np.float32)
    d /= d.sum(axis=-1, keepdims=True) + 1e-7
    return np.sqrt(d, out=d)


def mutual_matches_many(
    da: np.ndarray, db: np.ndarray, counts: np.ndarray, ratio: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`mutual_matches` of one image (``da``, (n, 128)) against m others at once: ``db`` (m, L, 128) holds
    their descriptors padded to L rows, ``counts`` how many rows of each are real. One matrix product for all m
    (BLAS runs at full speed on one large product, not m small ones), laid out (n, m, L) so that each of da's rows
    finds its two best in each image along contiguous memory; the mutual check then reads only the few columns
    that passed the ratio test, as the one-pair version does. Same matches as m calls of the one-pair version.

    (A bfloat16 product was tried: 4× faster on this project's AVX512-BF16 machine, but ranking its output in
    bfloat16 cost as much as the float32 product saved.)"""
    m, size = db.shape[0], db.shape[1]
    out: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0, np.int64), np.zeros(0, np.int64))] * m
    if len(da) < 2 or m == 0:
        return out
    pad = np.arange(size)[None, :] >= counts[:, None]  # (m, L)
    if pad.any():
        # padding rows of -10 score ≤ -10 against any RootSIFT (non-negative, unit length: its sum is ≥ 1), below
        # every real row (≥ 0): never a best or second best while an image has two real rows. Cheaper than
        # masking the similarities afterwards (a pass over all of them).
        db = db.copy()
        db[pad] = -10.0
    sim = (da @ db.reshape(m * size, -1).T).reshape(len(da), m, size)
    best = sim.argmax(axis=2)  # (n, m)
    s1 = np.take_along_axis(sim, best[:, :, None], axis=2)[:, :, 0]
    np.put_along_axis(sim, best[:, :, None], -np.inf, axis=2)
    s2 = sim.max(axis=2)
    np.put_along_axis(sim, best[:, :, None], s1[:, :, None], axis=2)
    d1 = np.maximum(2 - 2 * s1, 0)
    d2 = np.maximum(2 - 2 * s2, 0)
    passed = d1 <= ratio * ratio * d2  # (n, m)
    rows, cols = np.nonzero(passed.T)  # (image, row of da), grouped by image
    if not len(rows):
        return out
    target = best[cols, rows]
    mutual = sim[:, rows, target].argmax(axis=0) == cols
    keep = mutual & (counts[rows] >= 2)
    rows, cols, target = rows[keep], cols[keep], target[keep]
    bounds = np.searchsorted(rows, np.arange(m + 1))
    return [(cols[bounds[c] : bounds[c + 1]], target[bounds[c] : bounds[c + 1]]) for c in range(m)]


def fit_geometry(pa: np.ndarray, pb: np.ndarray, conf: MatchConf) -> np.ndarray:
    """Inlier mask of the robust two-view fit (all False when there are too few matches or no model is found)."""
    import cv2

    need = 8 if conf.geometry == "fundamental" else 4
    if len(pa) < need:
        return np.zeros(len(pa), bool)
    pa = np.ascontiguousarray(pa, np.float32)
    pb = np.ascontiguousarray(pb, np.float32)
    try:
        if conf.geometry == "fundamental":
            model, mask = cv2.findFundamentalMat(pa, pb, cv2.USAC_MAGSAC, conf.threshold, 0.999, MAX_ITERATIONS)
        else:
            model, mask = cv2.findHomography(
                pa, pb, cv2.USAC_MAGSAC, conf.threshold, maxIters=MAX_ITERATIONS, confidence=0.999
            )
    except cv2.error:
        return np.zeros(len(pa), bool)
    if model is None or mask is None:
        return np.zeros(len(pa), bool)
    return mask.ravel().astype(bool)


def match_points(
    fa: Features,
    fb: Features,
    conf: MatchConf | None = None,
    *,
    da: np.ndarray | None = None,
    db: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tentative matches as point arrays (pa, pb) at each image's extraction scale, and the inlier mask.

    ``da``/``db`` pass RootSIFT already computed (verifying many pairs of one image computes it once)."""
    conf = conf or MatchConf()
    k = conf.keypoints
    da = fa.rootsift(k) if da is None else da
    db = fb.rootsift(k) if db is None else db
    ia, ib = mutual_matches(da, db, conf.ratio)
    pa, pb = fa.xy[ia], fb.xy[ib]
    return pa, pb, fit_geometry(pa, pb, conf)


def verify(
    fa: Features | None,
    fb: Features | None,
    conf: MatchConf | None = None,
    *,
    da: np.ndarray | None = None,
    db: np.ndarray | None = None,
) -> Verdict:
    """The verdict on one pair; images without (enough) features give "unknown", never a match or an error."""
    conf = conf or MatchConf()
    if fa is None or fb is None or not fa.usable or not fb.usable:
        return Verdict(UNKNOWN)
    pa, _, mask = match_points(fa, fb, conf, da=da, db=db)
    return judge(int(mask.sum()), len(pa), conf)


def judge(inliers: int, tentative: int, conf: MatchConf) -> Verdict:
    """The verdict of a fit with ``inliers`` of ``tentative`` matches, between two images with enough keypoints."""
    ok = inliers >= conf.min_inliers and inliers >= conf.min_ratio * tentative
    return Verdict(MATCH if ok else NO_MATCH, inliers, tentative)
