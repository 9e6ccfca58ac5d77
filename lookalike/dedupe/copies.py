"""Near-duplicates: groups of rescaled, recompressed or cropped copies of one photo. Retrieval proposes candidate
pairs (a FAISS kNN graph, cosine ≥ a floor), the pixel check (``lookalike.dedupe.pixels``) decides.

Burst series come from the same candidates: pairs that do *not* line up pixel for pixel (different frames) but were
captured within a few seconds of each other and look alike are one moment shot several times, not copies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from lookalike.aggregate import l2_normalize
from lookalike.dedupe.decisions import Decisions
from lookalike.dedupe.formats import DedupeSettings, under
from lookalike.dedupe.geometry import confirm_copies
from lookalike.dedupe.orientations import (
    ORIENTATIONS,
    homography_confirms,
    turned_candidates,
    turned_pixel_scores,
)
from lookalike.dedupe.pixels import pixel_scores, thumbnails
from lookalike.errors import ConfigError
from lookalike.search import knn_graph

if TYPE_CHECKING:
    from lookalike.verify import FeatureCache
    from lookalike.view import IndexView

DEDUPE_FLOOR = 0.8  # cosine above which a kNN pair is a candidate copy (crops of flowers score from ~0.8)
DEDUPE_PIXEL = 0.9  # aligned pixel NCC at or above which a candidate is a copy (see lookalike.dedupe.pixels)
SERIES_SECONDS = 5.0  # frames captured this close together (EXIF time) can be one burst
SERIES_FLOOR = 0.85  # ... when their cosine is at least this


@dataclass
class CheckedPairs:
    """Candidate pairs (i < j) with their cosine and, when the pixel check ran, their aligned NCC (else None)."""

    pairs: np.ndarray  # (P, 2) int64
    cosine: np.ndarray  # (P,)
    ncc: np.ndarray | None  # (P,)


def check_ranges(threshold: float, pixel: float) -> None:
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold is a cosine similarity in [-1, 1], got {threshold}", setting="threshold")
    if not -1.0 <= pixel <= 1.0:
        raise ConfigError(
            f"pixel threshold is a correlation in [-1, 1] (0 = no pixel check), got {pixel}", setting="pixel"
        )


def candidate_pairs(
    vectors: np.ndarray,
    threshold: float = DEDUPE_FLOOR,
    k: int = 10,
    *,
    paths: Sequence[Path] | None = None,
    pixel: float = DEDUPE_PIXEL,
    notes: list[str] | None = None,
) -> CheckedPairs:
    """kNN pairs with cosine ≥ ``threshold``, each unordered pair once, pixel-checked when ``paths`` are given and
    ``pixel`` > 0. Pairs touching an image the pixel check cannot read are left out (and noted)."""
    notes = notes if notes is not None else []
    check_ranges(threshold, pixel)
    n = len(vectors)
    if n < 2:
        return CheckedPairs(np.zeros((0, 2), np.int64), np.zeros(0, np.float32), None)
    ids, scores = knn_graph(vectors, k)
    i = np.repeat(np.arange(n), ids.shape[1])
    j, s = ids.ravel(), scores.ravel()
    ok = (j >= 0) & (j != i) & (s >= threshold)
    lo, hi = np.minimum(i, j)[ok], np.maximum(i, j)[ok]
    pairs, first = np.unique(np.stack([lo, hi], axis=1), axis=0, return_index=True)
    cosine = s[ok][first]
    pairs = pairs.reshape(-1, 2).astype(np.int64)
    if paths is None or pixel <= 0 or not len(pairs):
        return CheckedPairs(pairs, cosine, None)
    used = np.unique(pairs)
    coarse, fine, bad = thumbnails([paths[u] for u in used])
    row = np.full(n, -1)
    row[used] = np.arange(len(used))
    local = row[pairs]
    readable = ~np.isin(local, bad).any(axis=1)
    if not readable.all():
        notes.append(f"{len(bad)} image(s) could not be read for the pixel check; their pairs are left out")
    ncc = pixel_scores(coarse, fine, local[readable])
    ncc = confirm_copies([paths[u] for u in used], local[readable], ncc, pixel, notes)
    return CheckedPairs(pairs[readable], cosine[readable], ncc)


def _shared(labels: np.ndarray) -> list[np.ndarray]:
    """The images of each label that at least two images share, in label order (one sort; a mask per label would
    cost labels × images)."""
    labels = np.where(np.bincount(labels, minlength=len(labels))[labels] >= 2, labels, -1)
    order = np.argsort(labels, kind="stable")
    sl = labels[order]
    starts = np.flatnonzero(np.r_[True, sl[1:] != sl[:-1]]) if len(sl) else np.array([], dtype=np.int64)
    ends = np.r_[starts[1:], len(sl)]
    return [order[s:e] for s, e in zip(starts, ends, strict=True) if sl[s] >= 0]


def _groups(n: int, pairs: np.ndarray) -> list[np.ndarray]:
    g = sparse.csr_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return _shared(connected_components(g, directed=False)[1].astype(np.int64))


def _score_range(vectors: np.ndarray, group: np.ndarray) -> tuple[float, float]:
    x = l2_normalize(np.asarray(vectors[group], dtype=np.float32))
    sims = x @ x.T  # a group is small: its own similarity matrix is cheap
    off = sims[~np.eye(len(group), dtype=bool)]
    return round(float(off.min()), 4), round(float(off.max()), 4)


def _constrained_groups(
    n: int, pairs: np.ndarray, strength: np.ndarray, hashes: Sequence[str], decisions: Decisions
) -> list[np.ndarray]:
    """Single linkage with cannot-link constraints: pairs join groups strongest first, unless the join would put two
    photos a person marked "not duplicates" into one group (directly or through other copies)."""
    parent = list(range(n))
    inside: dict[int, set[str]] = {}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in np.argsort(-strength, kind="stable"):
        a, b = (find(int(x)) for x in pairs[p])
        if a == b:
            continue
        ha, hb = inside.get(a, {hashes[a]}), inside.get(b, {hashes[b]})
        if any(decisions.separated(x, y) for x in ha for y in hb):
            continue
        parent[b] = a
        inside[a] = ha | hb
        inside.pop(b, None)
    return _shared(np.array([find(i) for i in range(n)], dtype=np.int64))


def near_duplicates(
    vectors: np.ndarray,
    names: list[str],
    threshold: float = DEDUPE_FLOOR,
    k: int = 10,
    *,
    paths: list[Path] | None = None,
    pixel: float = DEDUPE_PIXEL,
    notes: list[str] | None = None,
    hashes: Sequence[str] | None = None,
    decisions: Decisions | None = None,
    turned: np.ndarray | None = None,
    features: FeatureCache | None = None,
    apart: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """Groups of near-identical images (rescaled, recompressed, cropped copies): connected components over kNN pairs
    with cosine ≥ ``threshold`` that, given ``paths`` and ``pixel`` > 0, also line up pixel for pixel (aligned NCC ≥
    ``pixel``; see lookalike.dedupe.pixels). Without ``paths`` or with ``pixel`` 0 the cosine alone decides, which
    then needs a high threshold (~0.95) and still misses most crops.

    With ``hashes`` (content hash per image) and ``decisions``, photos a person marked "not duplicates" never end up
    in one group (nor joined through other copies: pairs join strongest first, and a join that would unite them is
    skipped), and a group wholly covered by a "keep all" decision says so (``"decision": "keep-all"``).

    ``turned`` (N, 4, dim): the vectors of each image turned 90°, 180°, 270° and mirrored
    (:func:`~lookalike.dedupe.orientations.orientation_vectors`) also find rotated and mirrored copies: T(a) near
    b is a candidate, confirmed when a turned by T lines up with b pixel for pixel or, given ``features`` (the
    index's local features), when a homography links them with many inliers (see ``lookalike.dedupe.orientations``).

    Largest group first; each group lists its ``ids`` (rows of ``vectors``), paths and the lowest and highest
    cosine inside it, and ``turns``: its pairs confirmed turned ({"a", "b", "turn"}: b is a turned by ``turn``).
    ``apart``: a mask of confirmed pairs (P, 2) that are not copies after all (RAW+JPEG siblings), dropped."""
    notes = notes if notes is not None else []
    checked = candidate_pairs(vectors, threshold, k, paths=paths, pixel=pixel, notes=notes)
    pairs = checked.pairs
    strength = checked.cosine
    if checked.ncc is not None:
        candidates = len(pairs)
        pairs = pairs[checked.ncc >= pixel]
        strength = checked.ncc[checked.ncc >= pixel]
        notes.append(f"{len(pairs)} of {candidates} candidate pairs (cosine ≥ {threshold:g}) line up pixel for pixel")
    if len(names) < 2:
        return []
    turns: dict[tuple[int, int], int] = {}
    if turned is not None:
        extra, extra_strength, turns = _turned_copies(
            vectors, turned, threshold, k, pairs, paths=paths, pixel=pixel, features=features, notes=notes
        )
        pairs = np.concatenate([pairs.reshape(-1, 2), extra])
        strength = np.concatenate([strength, extra_strength])
    pairs, strength = _keep_apart(pairs, strength, apart, notes)
    constrained = hashes is not None and decisions is not None and len(decisions) > 0
    if constrained:
        found = _constrained_groups(len(names), pairs, strength, hashes, decisions)  # type: ignore[arg-type]
    else:
        found = _groups(len(names), pairs)
    groups = []
    for group in found:
        low, high = _score_range(vectors, group)
        item: dict[str, Any] = {
            "size": len(group),
            "ids": [int(m) for m in group],
            "paths": [names[m] for m in group],
            "min_score": low,
            "max_score": high,
        }
        inside = set(item["ids"])
        turned_here = [
            {"a": names[a], "b": names[b], "turn": ORIENTATIONS[t]}
            for (a, b), t in turns.items()
            if a in inside and b in inside
        ]
        if turned_here:
            item["turns"] = turned_here
        if hashes is not None and decisions is not None and decisions.kept_all(hashes[m] for m in group):
            item["decision"] = "keep-all"
        groups.append(item)
    groups.sort(key=lambda g: (-g["size"], g["paths"][0]))
    return groups


def _keep_apart(
    pairs: np.ndarray, strength: np.ndarray, apart: Callable[[np.ndarray], np.ndarray] | None, notes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The confirmed pairs without those ``apart`` says are not copies (RAW+JPEG siblings), noted."""
    if apart is None or not len(pairs):
        return pairs, strength
    drop = apart(pairs.reshape(-1, 2))
    if drop.any():
        notes.append(
            f"{int(drop.sum())} RAW+JPEG sibling pair(s) kept apart: one shot in two formats, not copies "
            "(--raw-jpeg duplicates groups them)"
        )
    return pairs.reshape(-1, 2)[~drop], strength[~drop]


def index_duplicates(
    index: IndexView,
    threshold: float = DEDUPE_FLOOR,
    k: int = 10,
    *,
    pixel: float = DEDUPE_PIXEL,
    orientations: bool = False,
    notes: list[str] | None = None,
    progress: bool = False,
    settings: DedupeSettings | None = None,
    reference: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """:func:`near_duplicates` over an index: its vectors, names, paths, content hashes and decisions, and with
    ``orientations`` its turned vectors (computed and cached where missing) and local features. The one place that
    argument block is written (the ``dedupe find`` command and plans both come here).

    ``settings.path`` limits it to the photos whose names match the glob, and those under a ``reference`` folder
    (relative names); ``settings.raw_jpeg`` "pairs" keeps RAW+JPEG siblings out of the groups."""
    notes = notes if notes is not None else []
    settings = settings or DedupeSettings()
    names, paths, hashes = index.names, index.paths, index.hashes
    rows = np.arange(len(names))
    if settings.path is not None:
        from lookalike.filters import glob_regex

        regex = glob_regex(settings.path)
        rows = np.array([i for i, n in enumerate(names) if regex.fullmatch(n) or under(n, reference) is not None],
                        np.int64)  # fmt: skip
        notes.append(f"{len(rows)} of {len(names)} photos match --path {settings.path}" +
                     (" or are under a reference folder" if reference else ""))  # fmt: skip
    sub = rows if len(rows) < len(names) else None
    pick = (lambda seq: [seq[i] for i in rows]) if sub is not None else (lambda seq: list(seq))
    turned = index.orientation_vectors(progress=progress, notes=notes) if orientations else None
    times = index.metadata().column("exif_time").to_pylist()
    sub_names = pick(names)
    sub_paths = pick(paths)
    apart = _sibling_test(sub_names, sub_paths, pick(times)) if settings.raw_jpeg == "pairs" else None
    groups = near_duplicates(
        index.vectors[rows] if sub is not None else index.vectors, sub_names, threshold, k, paths=sub_paths,
        pixel=pixel, notes=notes, hashes=pick(hashes), decisions=Decisions.load(index.folder),
        turned=(turned[rows] if sub is not None else turned) if turned is not None else None,
        features=index.features if orientations else None, apart=apart,
    )  # fmt: skip
    if sub is not None:
        for g in groups:
            g["ids"] = [int(rows[m]) for m in g["ids"]]
    return groups


def _sibling_test(
    names: Sequence[str], paths: Sequence[Path], times: Sequence[str | None]
) -> Callable[[np.ndarray], np.ndarray]:
    """The ``apart`` test of :func:`near_duplicates` for RAW+JPEG siblings: same folder and stem, or same frame
    counter and capture time (and camera, read from the two files' headers, only for pairs that need it)."""
    from lookalike.dedupe.formats import are_siblings, format_of, header_tags

    def camera(i: int) -> str | None:
        try:
            with open(paths[i], "rb") as fh:
                return header_tags(fh.read(1 << 20))[0]
        except OSError:
            return None

    def test(pairs: np.ndarray) -> np.ndarray:
        out = np.zeros(len(pairs), bool)
        for n, (a, b) in enumerate(pairs.tolist()):
            if (format_of(names[a]) == "raw") == (format_of(names[b]) == "raw"):
                continue
            if are_siblings(names[a], names[b]):
                out[n] = True
            elif times[a] and times[a] == times[b]:
                out[n] = are_siblings(names[a], names[b], time_a=times[a], time_b=times[b],
                                      camera_a=camera(a), camera_b=camera(b))  # fmt: skip
        return out

    return test


def _turned_copies(
    vectors: np.ndarray,
    turned: np.ndarray,
    threshold: float,
    k: int,
    upright: np.ndarray,
    *,
    paths: list[Path] | None,
    pixel: float,
    features: FeatureCache | None,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, int], int]]:
    """Confirmed turned copies: (pairs, strength, {pair: turn}). Pairs already confirmed upright are not checked
    again; the others are candidates of T(a) ≈ b whatever their upright cosine (a mirrored copy's upright cosine
    is often high, yet its pixels only line up once mirrored)."""
    cand = turned_candidates(vectors, turned, threshold, k)
    done = {(int(a), int(b)) for a, b in upright.reshape(-1, 2)}
    keep = np.array([(int(a), int(b)) not in done for a, b in cand.pairs], bool)
    pairs, turn = cand.pairs[keep].reshape(-1, 2), cand.turn[keep]
    empty = (np.zeros((0, 2), np.int64), np.zeros(0, np.float32), {})
    if not len(pairs):
        notes.append(f"no rotated or mirrored candidate pairs (cosine ≥ {threshold:g}) beyond the upright copies")
        return empty
    ncc = np.full(len(pairs), -1.0, np.float32)
    checked = 0
    if paths is not None and pixel > 0:
        used = np.unique(pairs)
        coarse, fine, bad = thumbnails([paths[u] for u in used])
        row = np.full(len(vectors), -1)
        row[used] = np.arange(len(used))
        local = row[pairs]
        readable = ~np.isin(local, bad).any(axis=1)
        # a pair's turns best cosine first; once one lines up, its others are not checked (a true copy's best turn
        # is nearly always the right one, so this checks each copy about once instead of once per proposing turn)
        key = pairs[:, 0] * len(vectors) + pairs[:, 1]  # one number per pair
        order = np.lexsort((-cand.cosine[keep], key))
        rank = np.empty(len(pairs), np.int64)
        starts = np.r_[0, np.flatnonzero(np.diff(key[order])) + 1]
        rank[order] = np.arange(len(pairs)) - np.repeat(starts, np.diff(np.r_[starts, len(pairs)]))
        done_keys: set[int] = set()
        for r in range(int(rank.max()) + 1 if len(rank) else 0):
            sel = np.flatnonzero((rank == r) & readable & ~np.isin(key, list(done_keys)))
            if not len(sel):
                continue
            ncc[sel] = turned_pixel_scores(coarse, fine, local[sel], turn[sel])
            checked += len(sel)
            done_keys |= set(key[sel[ncc[sel] >= pixel]].tolist())
    by_pixel = ncc >= pixel if pixel > 0 else np.ones(len(pairs), bool)
    by_geometry = np.zeros(len(pairs), bool)
    pair_key = pairs[:, 0] * len(vectors) + pairs[:, 1]
    unconfirmed = ~np.isin(pair_key, pair_key[by_pixel])  # rows of pairs no turn of which lined up
    if features is not None and paths is not None and unconfirmed.any():
        rest = np.flatnonzero(unconfirmed)
        by_geometry[rest] = homography_confirms(features, paths, pairs[rest], turn[rest])
        notes.extend(features.notes)
    ok = by_pixel | by_geometry
    strength = np.where(by_pixel, ncc, pixel).astype(np.float32)
    best: dict[tuple[int, int], tuple[float, int]] = {}  # a pair confirmed in several turns keeps its best
    for (a, b), t, x in zip(pairs[ok], turn[ok], strength[ok], strict=True):
        if (int(a), int(b)) not in best or x > best[int(a), int(b)][0]:
            best[int(a), int(b)] = (float(x), int(t))
    how = (
        f"{int(by_pixel.sum())} line up pixel for pixel once turned ({checked} of {len(pairs)} pair-turns checked)"
        if paths is not None and pixel > 0
        else "by cosine alone (no pixel check)"
    )
    notes.append(
        f"{len(best)} of {len(np.unique(pairs, axis=0))} rotated or mirrored candidate pairs are copies: {how}, "
        f"{int((by_geometry & ~by_pixel).sum())} more hold a homography"
    )
    keys = sorted(best)
    return (
        np.array(keys, np.int64).reshape(-1, 2),
        np.array([best[x][0] for x in keys], np.float32),
        {x: best[x][1] for x in keys},
    )


def _epoch(t: str | None) -> float:
    if not t:
        return np.nan
    try:
        return datetime.fromisoformat(t).replace(tzinfo=None).timestamp()
    except ValueError:
        return np.nan


def burst_series(
    vectors: np.ndarray,
    names: list[str],
    times: Sequence[str | None],
    paths: list[Path],
    *,
    seconds: float = SERIES_SECONDS,
    threshold: float = SERIES_FLOOR,
    pixel: float = DEDUPE_PIXEL,
    k: int = 10,
    notes: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Burst series: groups of photos taken within ``seconds`` of each other (EXIF capture time) that look alike
    (cosine ≥ ``threshold``) but are *not* copies (aligned NCC < ``pixel``): the same moment, different frames.

    Each series lists its frames best first (sharpness, then exposure; ``lookalike.dedupe.keep``) with their facts;
    ``best`` is the suggested frame. Photos without a capture time are never in a series."""
    from lookalike.dedupe.keep import SHARP_TOLERANCE, facts_of

    notes = notes if notes is not None else []
    if seconds <= 0:
        raise ConfigError(f"seconds must be > 0, got {seconds}", setting="seconds")
    t = np.array([_epoch(x) for x in times], dtype=np.float64)
    if np.isfinite(t).sum() < 2:
        notes.append("fewer than two photos carry an EXIF capture time: no series can be found")
        return []
    checked = candidate_pairs(vectors, threshold, k, paths=paths, pixel=pixel, notes=notes)
    pairs = checked.pairs
    dt = np.abs(t[pairs[:, 0]] - t[pairs[:, 1]]) if len(pairs) else np.zeros(0)
    keep = np.isfinite(dt) & (dt <= seconds)
    if checked.ncc is not None:
        keep &= checked.ncc < pixel
    pairs = pairs[keep]
    out = []
    for group in _groups(len(names), pairs):
        facts = facts_of([paths[m] for m in group], [names[m] for m in group])
        ok = [(m, f) for m, f in zip(group, facts, strict=True) if not isinstance(f, Exception)]
        if len(ok) < 2:
            continue
        top = max(f.sharpness for _, f in ok)
        # sharp enough (within the keeper tolerance of the sharpest) first, then the better exposed, then sharper
        ok.sort(key=lambda mf: (mf[1].sharpness < top * (1 - SHARP_TOLERANCE), -mf[1].exposure, -mf[1].sharpness))
        span = np.nanmax(t[group]) - np.nanmin(t[group])
        out.append(
            {
                "size": len(ok),
                "best": names[ok[0][0]],
                "paths": [names[m] for m, _ in ok],
                "ids": [int(m) for m, _ in ok],
                "seconds": round(float(span), 3),
                "frames": [f.to_dict() for _, f in ok],
            }
        )
    out.sort(key=lambda s: (-s["size"], s["paths"][0]))
    return out
