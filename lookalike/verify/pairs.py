"""Verifying many pairs: the kNN candidate pairs of an index (hloc's retrieval pairs, never all pairs), matched and
verified in batches across cores.

A batch holds the pairs of a few images (pairs are sorted by their first image), so each image's RootSIFT is
computed once per batch. Matching is a matrix product and the geometric fit is OpenCV; both release the GIL, so
threads use every core without copying features between processes, and BLAS is held to one thread each so the
threads do not fight over the cores.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.errors import ConfigError, LookalikeError
from lookalike.progress import bar
from lookalike.search import knn_pairs
from lookalike.verify.local_features import MIN_KEYPOINTS, FeatureCache, FeatureConf, FeatureEngine, Features
from lookalike.verify.match import (
    MATCH,
    NO_MATCH,
    UNKNOWN,
    MatchConf,
    Verdict,
    fit_geometry,
    judge,
    mutual_matches_many,
    rootsift_rows,
    verify,
)

if TYPE_CHECKING:
    from lookalike.store import Store

BATCH = 64
CHUNK = 16
"""Candidates one re-ranking thread matches with one matrix product: 16 × 512 × 512 float32 similarities = 16 MiB."""


def _workers(workers: int | None) -> int:
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}", setting="workers")
    return workers or min(4, os.cpu_count() or 1)


def verify_pairs(
    cache: FeatureCache,
    a: Sequence[int] | np.ndarray,
    b: Sequence[int] | np.ndarray,
    conf: MatchConf | None = None,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> list[Verdict]:
    """The verdict of each pair (a[i], b[i]) of image ids, computing the features they need first."""
    import cv2
    from threadpoolctl import threadpool_limits

    conf = conf or MatchConf()
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    if a.shape != b.shape:
        raise LookalikeError("pairs need as many first as second images")
    workers = _workers(workers)
    cache.ensure(np.unique(np.concatenate([a, b])).tolist(), workers=workers, progress=progress)
    order = np.lexsort((b, a))
    batches = [[(int(p), int(a[p]), int(b[p])) for p in order[s : s + BATCH]] for s in range(0, len(order), BATCH)]
    verdicts: list[Verdict | None] = [None] * len(a)
    if cache.engine is not None:
        hashes = cache.hashes
        needed = {x for batch in batches for _, i, j in batch for x in (i, j) if x not in cache.failed}
        files = {x: str(cache.file_of(hashes[x])) for x in needed}
        with bar("verifying pairs", len(a), progress and len(a) > 0, unit="pairs") as tick:
            for done, counts in cache.engine.verify(batches, files, conf.to_dict()):
                for p, status, inliers, matches in done:
                    verdicts[p] = Verdict(status, inliers, matches)
                cache.counts.update(counts)
                tick.advance(len(done))
        return verdicts  # type: ignore[return-value]

    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with (
            threadpool_limits(1),
            bar("verifying pairs", len(a), progress and len(a) > 0, unit="pairs") as tick,
            ThreadPoolExecutor(workers) as pool,
        ):
            for done in pool.map(lambda batch: verify_batch(batch, cache.get, conf), batches):
                for p, v in done:
                    verdicts[p] = v
                tick.advance(len(done))
    finally:
        cv2.setNumThreads(previous)
    return verdicts  # type: ignore[return-value]


def verify_batch(
    batch: Sequence[tuple[int, int, int]], get: Callable[[int], Features | None], conf: MatchConf
) -> list[tuple[int, Verdict]]:
    """The verdicts of a batch of ``(position, image, image)`` pairs, each image's RootSIFT computed once: what every
    engine runs per batch."""
    desc: dict[int, np.ndarray] = {}
    out = []
    for p, i, j in batch:
        fi, fj = get(i), get(j)
        if fi is None or fj is None or not fi.usable or not fj.usable:
            out.append((p, Verdict(UNKNOWN)))
            continue
        for x, f in ((i, fi), (j, fj)):
            if x not in desc:
                desc[x] = f.rootsift(conf.keypoints)
        out.append((p, verify(fi, fj, conf, da=desc[i], db=desc[j])))
    return out


def verify_files(
    batch: Sequence[tuple[int, int, int]], files: dict[int, str], conf: dict[str, Any]
) -> tuple[list[tuple[int, str, int, int]], dict[int, int]]:
    """:func:`verify_batch` reading features from their files (``files``: image id -> path; an image not named or
    whose file does not load has no features): the unit of work a remote engine runs, on one core, with plain
    arguments and results. Returns ``(position, status, inliers, matches)`` per pair and each image's keypoints."""
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    loaded: dict[int, Features | None] = {}

    def get(i: int) -> Features | None:
        if i not in loaded:
            try:
                loaded[i] = Features.load(Path(files[i])) if i in files else None
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                loaded[i] = None
        return loaded[i]

    with threadpool_limits(1):
        done = verify_batch(batch, get, MatchConf(**conf))
    counts = {i: len(f) for i, f in loaded.items() if f is not None}
    return [(p, v.status, v.inliers, v.matches) for p, v in done], counts


def verify_against(
    query: Features | None,
    cache: FeatureCache,
    ids: Sequence[int] | np.ndarray,
    conf: MatchConf | None = None,
    *,
    workers: int | None = None,
) -> list[Verdict]:
    """The verdict of one query (features of an image that need not be indexed) against each indexed id, in
    parallel: what re-ranking a search result costs.

    With ``conf.keypoints`` set (re-ranking's 512), the candidates' keypoints come from the memory-mapped pack
    (:meth:`FeatureCache.pack`) rather than one file each, and each thread matches the query against a chunk of
    candidates with one matrix product (:func:`mutual_matches_many`); the verdicts are those of :func:`verify`."""
    import cv2
    from threadpoolctl import threadpool_limits

    conf = conf or MatchConf()
    ids = [int(i) for i in ids]
    if query is None or not query.usable:
        return [Verdict(UNKNOWN) for _ in ids]
    workers = _workers(workers)
    cache.ensure(ids, workers=workers)
    limit = conf.keypoints
    pack = cache.pack(limit) if limit is not None and limit >= MIN_KEYPOINTS else None
    hashes = cache.hashes
    dq = query.rootsift(limit)

    def features_of(i: int) -> Features | None:
        got = pack.features(hashes[i]) if pack is not None else None
        return got if got is not None else cache.get(i)

    def run(chunk: list[int]) -> list[Verdict]:
        feats = [features_of(i) for i in chunk]
        live = [k for k, f in enumerate(feats) if f is not None and f.usable]
        out = [Verdict(UNKNOWN) for _ in chunk]
        if not live:
            return out
        counts = np.array([min(len(feats[k]), limit or len(feats[k])) for k in live])  # type: ignore[arg-type]
        stack = np.zeros((len(live), int(counts.max()), 128), np.uint8)
        for r, k in enumerate(live):
            stack[r, : counts[r]] = feats[k].sift[: counts[r]]  # type: ignore[union-attr]
        found = mutual_matches_many(dq, rootsift_rows(stack), counts, conf.ratio)
        for k, (ia, ib) in zip(live, found, strict=True):
            if len(ia) < conf.min_inliers:  # cannot reach min_inliers whatever the fit: no fit (early exit)
                out[k] = Verdict(NO_MATCH, 0, len(ia))
                continue
            f = feats[k]
            mask = fit_geometry(query.xy[ia], f.xy[ib], conf)  # type: ignore[union-attr]
            out[k] = judge(int(mask.sum()), len(ia), conf)
        return out

    size = max(1, min(CHUNK, -(-len(ids) // workers)))
    chunks = [ids[s : s + size] for s in range(0, len(ids), size)]
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(1), ThreadPoolExecutor(workers) as pool:
            return [v for part in pool.map(run, chunks) for v in part]
    finally:
        cv2.setNumThreads(previous)


@dataclass
class VerifiedPair:
    """A candidate pair (ids and names in index order), its cosine, and the verdict of geometric verification
    (``None`` for a retrieval pair nobody verified). Unpacks as hloc's ``(name_a, name_b, score)``."""

    a: int
    b: int
    name_a: str
    name_b: str
    score: float
    verdict: Verdict | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.name_a, self.name_b, self.score))

    def to_dict(self) -> dict[str, Any]:
        out = {"a": self.name_a, "b": self.name_b, "score": round(self.score, 4)}
        return {**out, **self.verdict.to_dict()} if self.verdict is not None else out


def candidate_pairs(
    store: Store,
    num_matched: int = 10,
    min_score: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kNN retrieval pairs of an index's vectors: ids (a, b) with a < b, and their cosine."""
    if len(store) < 2:
        raise LookalikeError(f"the index has {len(store)} image(s); pairs need at least 2")
    return knn_pairs(store.vectors, num_matched, min_score)


def verified_pairs(
    store: Store,
    num_matched: int = 10,
    *,
    min_score: float | None = None,
    conf: MatchConf | None = None,
    features: FeatureConf | None = None,
    workers: int | None = None,
    progress: bool = False,
    notes: list[str] | None = None,
    engine: FeatureEngine | None = None,
) -> list[VerifiedPair]:
    """Every kNN candidate pair of the index, verified; in the order of :func:`candidate_pairs`. ``engine``: where
    features are extracted and pairs verified (None: this machine's threads; the verdicts are the same)."""
    a, b, s = candidate_pairs(store, num_matched, min_score)
    cache = FeatureCache(store, features, engine=engine)
    verdicts = verify_pairs(cache, a, b, conf, workers=workers, progress=progress)
    if notes is not None:
        notes.extend(cache.notes)
        unknown = sum(v.status == UNKNOWN for v in verdicts)
        verified = sum(v.status == MATCH for v in verdicts)
        notes.append(f"{verified} of {len(verdicts)} candidate pairs verified, {unknown} unknown (too few keypoints)")
    names = store.column("path")
    return [
        VerifiedPair(int(i), int(j), names[i], names[j], float(x), v)
        for i, j, x, v in zip(a, b, s, verdicts, strict=True)
    ]
