"""The second look at pairs the thumbnail check cannot decide: do their keypoints fit one crop-and-scale?

WHY: at the pixel check's 96 px, two photos of one façade taken a few steps apart line up almost as well as a photo
and its crop. On the dedupe_formats bench (300 groups made from ../shared/data), photos of the Sceaux château shot
seconds apart reached aligned NCC 0.90–0.94, while true crops, recompressions and edits spread over 0.90–0.96: no
threshold separates them, and single linkage then chained four different photos into one "copy" group. A copy is
the original up to a crop and one uniform scale, so its SIFT keypoints map onto the other's through one similarity
transform, within 2 px at 512 px, for most mutual matches (at least 0.83 of them over the bench's 561 true pairs in
that band); another viewpoint needs perspective, which such a transform cannot give, and explains at most 0.39 of
its matches (37 pairs). Only pairs inside the ambiguous band ``[pixel threshold, CONFIRM_ABOVE)`` are looked at
again, so a collection without such pairs pays nothing, and a pair with too few matches to say (a plain sky, a
flat graphic) keeps the pixel check's verdict.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lookalike.verify.local_features import FeatureConf, Features, features_of_file
from lookalike.verify.match import mutual_matches, rootsift_rows

CONFIRM_ABOVE = 0.96  # aligned NCC at or above which no different photo was seen: no second look
MIN_SHARE = 0.6  # share of mutual matches one similarity transform must explain (gap 0.39-0.83 on the bench)
MIN_MATCHES = 12  # fewer mutual matches than this: the keypoints cannot say, the pixel check stands
TOLERANCE = 2.0  # px at CONF.resolution
RATIO = 0.8
CONF = FeatureConf(max_keypoints=1000, resolution=512)


def similarity_share(a: Features, b: Features) -> float | None:
    """Share of mutual RootSIFT matches one similarity transform (scale, rotation, shift) explains, or None when
    there are too few matches to tell. Coordinates are brought to one scale first: a copy downscaled to half its
    size still has the same keypoints at half the coordinates."""
    import cv2

    ia, ib = mutual_matches(rootsift_rows(a.sift), rootsift_rows(b.sift), RATIO)
    if len(ia) < MIN_MATCHES:
        return None
    # each side's keypoints in units of its own long side times the resolution: tolerance means the same everywhere
    pa = a.xy[ia] * (CONF.resolution / max(a.size))
    pb = b.xy[ib] * (CONF.resolution / max(b.size))
    _, inliers = cv2.estimateAffinePartial2D(
        pa, pb, method=cv2.RANSAC, ransacReprojThreshold=TOLERANCE, maxIters=2000, confidence=0.999
    )
    if inliers is None:
        return 0.0
    return float(inliers.sum()) / len(ia)


def confirm_copies(
    paths: Sequence[str | os.PathLike[str]], pairs: np.ndarray, ncc: np.ndarray, pixel: float, notes: list[str]
) -> np.ndarray:
    """``ncc`` with each ambiguous pair (``pixel`` ≤ NCC < ``CONFIRM_ABOVE``) whose keypoints do not fit one
    similarity transform lowered to that share (below ``MIN_SHARE``, so below any pixel threshold in use); rows of
    ``pairs`` index ``paths``. An unreadable image leaves its pairs as they were."""
    out = np.array(ncc, dtype=np.float32, copy=True)
    band = np.flatnonzero((out >= pixel) & (out < CONFIRM_ABOVE))
    if not len(band):
        return out
    used = np.unique(pairs[band])
    features: dict[int, Features | None] = {}

    def one(u: int) -> None:
        features[u] = features_of_file(Path(paths[u]), str(paths[u]), CONF)[0]

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # OpenCV's SIFT releases the GIL
        list(pool.map(one, used.tolist()))
    rejected = 0
    for p in band:
        fa, fb = features.get(int(pairs[p, 0])), features.get(int(pairs[p, 1]))
        share = similarity_share(fa, fb) if fa is not None and fb is not None else None
        if share is not None and share < MIN_SHARE:
            out[p] = min(float(out[p]), share)
            rejected += 1
    notes.append(
        f"{len(band)} candidate pair(s) lined up only roughly at thumbnail size and were checked with keypoints: "
        f"{rejected} are other views of a scene, not copies (their keypoints fit no single crop and scale)"
    )
    return out
