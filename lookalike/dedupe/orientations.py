"""Rotated and mirrored copies: candidates from the global vectors of each image turned (90°, 180°, 270°) and
mirrored, confirmed pixel for pixel in the matching orientation or by a homography with many inliers.

WHY: a CNN descriptor is not rotation invariant (a photo turned 90° is, to it, another photo) and only roughly
mirror invariant, so a copy that was turned or flipped (a scan fed in sideways, a phone that ignored EXIF, a
mirrored selfie) is never a kNN candidate of its original. Describing each image four more times (its three
rotations and its mirror) and searching those vectors among the upright ones finds it: T(a) looks like b. Those
four extra descriptions are why it is opt-in: they cost four times the model work of indexing (five descriptions
per image instead of one), cached in ``INDEX_DIR/orientations.npz`` by content hash so a second run costs nothing.

A candidate (a, b, T) is then checked as an upright one is, with ``a``'s thumbnails turned by T first
(``lookalike.dedupe.pixels``: squashed square thumbnails turn exactly as the image does), and, when the pixels do
not line up (a crop beyond the pixel check's range, heavy recompression), by a homography between their local
features (``lookalike.verify``) that must hold many inliers. SIFT is rotation invariant, so turned pairs match
their cached features as they are; it is not mirror invariant, so a mirrored candidate's features are extracted
from the mirrored image on the spot (a candidate pair is rare; nothing else is recomputed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from lookalike.errors import ImageError
from lookalike.images import decode, read_file
from lookalike.io import atomic_write
from lookalike.progress import bar
from lookalike.search import exact_topk
from lookalike.store import ORIENTATIONS_FILE

if TYPE_CHECKING:
    from lookalike.store import Store
    from lookalike.verify import FeatureCache, Features

ORIENTATIONS = ("rot90", "rot180", "rot270", "mirror")
"""The turns described: T(image) for each. Rotations are counter-clockwise (PIL's ``ROTATE_90``, numpy's
``rot90``); ``mirror`` flips left to right. Their inverses: rot90 ↔ rot270, rot180 and mirror are their own."""
INVERSE = {0: 2, 1: 1, 2: 0, 3: 3}
_PIL = (
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.FLIP_LEFT_RIGHT,
)
HOMOGRAPHY_INLIERS = 40
"""Inliers a homography needs to confirm a turned copy (with ≥ ``HOMOGRAPHY_RATIO`` of the tentative matches): a
copy shares hundreds of keypoints, and "many" keeps two photos of one flat poster or painting from passing."""
HOMOGRAPHY_RATIO = 0.5
EXTRA_DESCRIPTIONS = len(ORIENTATIONS)
"""Model passes per image added by ``--orientations`` (on top of indexing's one)."""


def turn_image(img: Image.Image, t: int) -> Image.Image:
    return img.transpose(_PIL[t])


def turn_array(a: np.ndarray, t: int) -> np.ndarray:
    """The same turn as :func:`turn_image` on the last two axes (rows, columns) of an array of pixels."""
    if t == 3:
        return np.ascontiguousarray(a[..., ::-1])
    return np.ascontiguousarray(np.rot90(a, t + 1, axes=(-2, -1)))


@dataclass
class TurnedPairs:
    """Candidate (pair, turn) rows: turn ``turn[p]`` of image a may be image b (a < b), with that cosine. A pair
    can come with several turns: the descriptor is nearly mirror invariant and a 180° turn of a symmetric scene
    resembles another turn, so the best-scoring turn is not always the right one and each is checked."""

    pairs: np.ndarray  # (P, 2) int64, a < b
    turn: np.ndarray  # (P,) index into ORIENTATIONS
    cosine: np.ndarray  # (P,)


def orientation_vectors(
    store: Store,
    describe: Callable[[list[Image.Image]], np.ndarray],
    resolution: int | None,
    *,
    progress: bool = False,
    notes: list[str] | None = None,
) -> np.ndarray:
    """(N, 4, dim) vectors of every indexed image turned by each of :data:`ORIENTATIONS`, rows in index order.

    Cached in ``INDEX_DIR/orientations.npz`` (float16, by content hash): only images not described yet are, so a
    second run, or one after adding photos, describes only what is new. An unreadable image gets zero vectors (it
    is then nobody's candidate) and a note."""
    notes = notes if notes is not None else []
    hashes = store.column("hash")
    root, names = store.root, store.column("path")
    path = store.path / ORIENTATIONS_FILE
    known: dict[str, np.ndarray] = {}
    with contextlib.suppress(OSError, ValueError, KeyError, EOFError):
        with np.load(path, allow_pickle=False) as z:
            stored_hashes, stored = z["hashes"], z["vectors"]
        if stored.ndim == 3 and stored.shape[1:] == (len(ORIENTATIONS), store.dim):
            known = {str(h): stored[r] for r, h in enumerate(stored_hashes)}
    out = np.zeros((len(hashes), len(ORIENTATIONS), store.dim), np.float16)
    todo = [i for i, h in enumerate(hashes) if h not in known]
    for i, h in enumerate(hashes):
        if h in known:
            out[i] = known[h]
    bad = 0
    batch = 8
    with bar("turned copies' vectors", len(todo), progress and len(todo) > 0) as tick:
        for s in range(0, len(todo), batch):
            images, rows = [], []
            for i in todo[s : s + batch]:
                try:
                    img = decode(read_file(root / names[i]), names[i], target=resolution)[0]
                except ImageError:
                    bad += 1
                    continue
                images += [turn_image(img, t) for t in range(len(ORIENTATIONS))]
                rows.append(i)
            if images:
                v = describe(images).reshape(len(rows), len(ORIENTATIONS), -1)
                out[rows] = v.astype(np.float16)
            tick.advance(len(todo[s : s + batch]))
    if bad:
        notes.append(f"{bad} image(s) could not be read to describe them turned; they have no turned candidates")
    if todo:
        ok = np.abs(out).sum(axis=(1, 2)) > 0
        keep = np.flatnonzero(ok)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, hashes=np.asarray(hashes, dtype=str)[keep], vectors=out[keep])

        atomic_write(path, write)
    return out


def turned_candidates(vectors: np.ndarray, turned: np.ndarray, threshold: float, k: int = 10) -> TurnedPairs:
    """(pair, turn) rows with b among the ``k`` nearest upright vectors of T(a), cosine ≥ ``threshold``. Each row
    is listed once, as (min, max), its turn inverted when the search found it from the larger id (T(b) ≈ a means
    T⁻¹(a) ≈ b); found both ways, it keeps the higher cosine."""
    n = len(vectors)
    best: dict[tuple[int, int, int], float] = {}
    up = np.ascontiguousarray(vectors, np.float32)
    for t in range(len(ORIENTATIONS) if n >= 2 else 0):
        q = np.ascontiguousarray(turned[:, t], np.float32)
        live = np.flatnonzero(np.abs(q).sum(axis=1) > 0)
        if not len(live):
            continue
        norms = np.linalg.norm(q[live], axis=1, keepdims=True)
        scores, ids = exact_topk(q[live] / np.maximum(norms, 1e-12), up, min(k + 1, n))
        for r, a in enumerate(live):
            for s, b in zip(scores[r], ids[r], strict=True):
                if b < 0 or b == a or s < threshold:
                    continue
                key = (int(a), int(b), t) if a < b else (int(b), int(a), INVERSE[t])
                best[key] = max(float(s), best.get(key, -2.0))
    keys = sorted(best)
    return TurnedPairs(
        np.array([(a, b) for a, b, _ in keys], np.int64).reshape(-1, 2),
        np.array([t for _, _, t in keys], np.int64),
        np.array([best[x] for x in keys], np.float32),
    )


def turned_pixel_scores(coarse: np.ndarray, fine: np.ndarray, pairs: np.ndarray, turn: np.ndarray) -> np.ndarray:
    """Aligned NCC of each pair (rows of the thumbnails) with the first image turned by ``turn`` first."""
    from lookalike.dedupe.pixels import pixel_scores

    out = np.empty(len(pairs), np.float32)
    for t in np.unique(turn):
        sel = np.flatnonzero(turn == t)
        a, b = pairs[sel, 0], pairs[sel, 1]
        c = np.concatenate([turn_array(coarse[a], int(t)), coarse[b]])
        f = np.concatenate([turn_array(fine[a], int(t)), fine[b]])
        local = np.stack([np.arange(len(sel)), len(sel) + np.arange(len(sel))], axis=1)
        out[sel] = pixel_scores(c, f, local)
    return out


def _turn_of(pa: np.ndarray, pb: np.ndarray) -> int | None:
    """Which quarter turn (0 = none, 1 = 90° … as numpy's rot90 counts) carries points pa onto pb: the rotation of a
    similarity fitted to the inliers, rounded to the nearest quarter; None when no similarity fits."""
    import cv2

    m, _ = cv2.estimateAffinePartial2D(np.float32(pa), np.float32(pb))
    if m is None:
        return None
    angle = np.degrees(np.arctan2(m[1, 0], m[0, 0]))  # image y points down: a counter-clockwise turn is negative
    return round(float(-angle) / 90.0) % 4


def homography_confirms(cache: FeatureCache, paths: Sequence[Path], pairs: np.ndarray, turn: np.ndarray) -> np.ndarray:
    """Whether a homography with ≥ ``HOMOGRAPHY_INLIERS`` inliers (and ≥ ``HOMOGRAPHY_RATIO`` of the tentative
    matches) links each (pair, turn) row, image a turned by ``turn``. SIFT is rotation invariant, so a pair is
    matched once on its cached features and the fit itself says which quarter turn it is (a similarity fitted to
    the inliers); only the row of that turn is confirmed. SIFT is not mirror invariant: for a mirror row, a's
    features come from its mirrored pixels and the fit must need no turn on top."""
    from lookalike.verify import MatchConf, extract, judge, match_points

    conf = MatchConf(geometry="homography", min_inliers=HOMOGRAPHY_INLIERS, min_ratio=HOMOGRAPHY_RATIO)
    ok = np.zeros(len(pairs), bool)
    if not len(pairs):
        return ok
    cache.ensure(np.unique(pairs).tolist())

    def fitted(fa: Features | None, fb: Features | None) -> int | None:
        if fa is None or fb is None or not fa.usable or not fb.usable:
            return None
        pa, pb, mask = match_points(fa, fb, conf)
        if not judge(int(mask.sum()), len(pa), conf).verified:
            return None
        return _turn_of(pa[mask], pb[mask])

    rows = np.flatnonzero(turn != 3)
    for a, b in {(int(x), int(y)) for x, y in pairs[rows]}:
        quarter = fitted(cache.get(a), cache.get(b))
        if quarter:  # 1..3 quarter turns = rot90..rot270 (index 0..2); 0 is an upright copy, not a turn
            ok[rows[(pairs[rows, 0] == a) & (pairs[rows, 1] == b) & (turn[rows] == quarter - 1)]] = True
    for p in np.flatnonzero(turn == 3):
        a, b = int(pairs[p, 0]), int(pairs[p, 1])
        try:
            img = decode(read_file(paths[a]), str(paths[a]), target=cache.conf.resolution)[0]
        except ImageError:
            continue
        ok[p] = fitted(extract(turn_image(img, 3), cache.conf), cache.get(b)) == 0
    return ok
