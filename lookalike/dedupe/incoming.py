"""Which photos of a new folder are already in an indexed collection: embed only the new photos, search the stored
index, let the pixel check decide. The collection is never compared with itself, so the cost grows with the number
of new photos (plus one search each), not with the collection."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.dedupe.copies import DEDUPE_FLOOR, DEDUPE_PIXEL, check_ranges
from lookalike.dedupe.geometry import confirm_copies
from lookalike.dedupe.pixels import pixel_scores, thumbnails
from lookalike.errors import ImageError, LookalikeError
from lookalike.images import Discovery, content_hash, discover, read_file
from lookalike.progress import bar

if TYPE_CHECKING:
    from lookalike.view import IndexView


def _under_glob(names: list[str], path: str | None) -> tuple[np.ndarray | None, set[int]]:
    """Rows whose names match ``path`` (None: all), as an array and a set: only indexed photos under the glob count
    as "already there"."""
    if path is None:
        return None, set()
    from lookalike.filters import glob_regex

    regex = glob_regex(path)
    allowed = np.array([i for i, n in enumerate(names) if regex.fullmatch(n)], np.int64)
    return allowed, set(allowed.tolist())


def _search(index: IndexView, vectors: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if allowed is not None and not len(allowed):
        return np.zeros((len(vectors), 1), np.float32), np.full((len(vectors), 1), -1)
    return index.searcher.search(vectors, min(k, len(index)) if len(index) else 1, allowed=allowed)


def check_new(
    index: IndexView,
    folder: str | os.PathLike[str],
    *,
    threshold: float = DEDUPE_FLOOR,
    pixel: float = DEDUPE_PIXEL,
    k: int = 5,
    batch_size: int = 8,
    progress: bool = False,
    path: str | None = None,
) -> dict[str, Any]:
    """One entry per image of ``folder``: ``status`` "copy" (with ``copy_of``: indexed names, best first, each with
    cosine and pixel score), "new", or "skipped" (with ``reason``). A byte-identical file is a copy without being
    embedded. Returns ``{"photos": [...], "summary": {...}, "seconds": s, "embed_seconds": s}``.

    The steps: the folder walked (:func:`_walk`), byte-identical files found by hash (:func:`_identical`), the rest
    embedded (:func:`_embed`), searched and pixel-checked against the index (:func:`_copies`)."""
    check_ranges(threshold, pixel)
    allowed, allowed_set = _under_glob(index.names, path)
    started = time.perf_counter()
    src = Path(folder)
    found, files = _walk(index, src, folder)
    results: dict[Path, dict[str, Any]] = {p: {"status": "skipped", "reason": why} for p, why in found.skipped}
    to_embed = _identical(index, found.files, allowed, allowed_set, results)
    t_embed = time.perf_counter()
    embedded, vec_rows = _embed(index, to_embed, batch_size, progress, results)
    embed_seconds = time.perf_counter() - t_embed
    checked = 0  # candidate pairs pixel-checked: what the cost after embedding grows with
    if embedded:
        checked = _copies(index, embedded, np.concatenate(vec_rows), threshold, pixel, k, allowed, results)
    photos = [{"path": p.relative_to(src).as_posix(), **results[p]} for p in sorted(files)]
    counts = {s: sum(x["status"] == s for x in photos) for s in ("copy", "new", "skipped")}
    return {
        "folder": str(src.resolve()),
        "photos": photos,
        "summary": {"photos": len(photos), **counts, "embedded": len(embedded), "checked_pairs": checked},
        "settings": {"threshold": threshold, "pixel": pixel, "k": k, **({"path": path} if path else {})},
        "seconds": round(time.perf_counter() - started, 3),
        "embed_seconds": round(embed_seconds, 3),
    }


def _walk(index: IndexView, src: Path, folder: str | os.PathLike[str]) -> tuple[Discovery, list[Path]]:
    """The images of the new folder, walked as indexing walks (pipes, devices and dangling links are reported,
    never opened; exports left out), and every file that will have an entry (the skipped ones too)."""
    if not src.is_dir():
        raise LookalikeError(f"not a folder: {folder}")
    found = discover(src, exclude=[index.folder])
    files = found.files + [p for p, _ in found.skipped]
    if not files:
        raise LookalikeError(f"no images found in {folder}")
    return found, files


def _identical(
    index: IndexView,
    files: list[Path],
    allowed: np.ndarray | None,
    allowed_set: set[int],
    results: dict[Path, dict[str, Any]],
) -> list[Path]:
    """Files byte-identical to an indexed photo (under the glob) are copies without being embedded, unreadable ones
    skipped (both recorded in ``results``); the others are returned, to embed."""
    names = index.names
    to_embed: list[Path] = []
    for p in files:
        try:
            digest = content_hash(read_file(p))
        except ImageError as exc:
            results[p] = {"status": "skipped", "reason": str(exc).removeprefix(f"{p}: ")}
            continue
        same = [i for i in index.hash_ids(digest) if allowed is None or i in allowed_set]
        if same:
            results[p] = {
                "status": "copy",
                "copy_of": [{"name": names[i], "id": i, "cosine": 1.0, "pixel": 1.0, "identical": True} for i in same],
            }
        else:
            to_embed.append(p)
    return to_embed


def _embed(
    index: IndexView, to_embed: list[Path], batch_size: int, progress: bool, results: dict[Path, dict[str, Any]]
) -> tuple[list[Path], list[np.ndarray]]:
    """The new photos embedded as the index's were: the files embedded and their (1, dim) vectors; a file that
    fails is recorded as skipped in ``results``."""
    vec_rows: list[np.ndarray] = []
    embedded: list[Path] = []
    with bar("embedding new photos", len(to_embed), progress and bool(to_embed)) as tick:
        for batch in index.describer.describe_files(to_embed, batch_size=batch_size):
            v = 0
            for item in batch.items:
                if item.error:
                    results[item.path] = {"status": "skipped", "reason": item.error}
                else:
                    embedded.append(item.path)
                    vec_rows.append(batch.vectors[v : v + 1])
                    v += 1
            tick.advance(len(batch.items))
    return embedded, vec_rows


def _copies(
    index: IndexView,
    embedded: list[Path],
    vectors: np.ndarray,
    threshold: float,
    pixel: float,
    k: int,
    allowed: np.ndarray | None,
    results: dict[Path, dict[str, Any]],
) -> int:
    """Each embedded photo searched in the index (under the glob), its candidates above ``threshold``
    pixel-checked; records "copy" (the indexed photos it copies, best first) or "new" in ``results``. Returns how
    many candidate pairs were pixel-checked."""
    names = index.names
    checked = 0
    scores, ids = _search(index, vectors, k, allowed)
    q, c = np.nonzero((ids >= 0) & (scores >= threshold))
    cand = ids[q, c]
    ncc = np.ones(len(q), np.float32)
    if pixel > 0 and len(q):
        used = np.unique(cand)
        paths = [embedded[i] for i in range(len(embedded))] + [index.root / names[j] for j in used]
        coarse, fine, bad = thumbnails(paths)
        col = np.full(len(index), -1)
        col[used] = len(embedded) + np.arange(len(used))
        pairs = np.stack([q, col[cand]], axis=1)
        ncc = np.full(len(q), -2.0, np.float32)
        readable = ~np.isin(pairs, bad).any(axis=1)
        if readable.any():
            ncc[readable] = pixel_scores(coarse, fine, pairs[readable])
            ncc[readable] = confirm_copies(paths, pairs[readable], ncc[readable], pixel, [])
        checked = int(readable.sum())
    for r, p in enumerate(embedded):
        hits = [
            {"name": names[int(cand[m])], "id": int(cand[m]), "cosine": round(float(scores[r, c[m]]), 4),
             "pixel": round(float(ncc[m]), 4), "identical": False}
            for m in np.flatnonzero(q == r)
            if pixel <= 0 or ncc[m] >= pixel
        ]  # fmt: skip
        hits.sort(key=lambda h: (-h["pixel"], -h["cosine"]))
        results[p] = {"status": "copy", "copy_of": hits} if hits else {"status": "new"}
    return checked
