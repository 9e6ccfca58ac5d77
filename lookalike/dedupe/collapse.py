"""Collapsing copies in search results: one hit per copy group (its keeper), with the ids folded into it.

WHICH copy groups: a fast near-duplicate pass restricted to the hits, not the index's saved plans (a plan may be
stale or never made, and a collection-wide ``dedupe find`` costs seconds to minutes). Among the hits of one search,
pairs with cosine ≥ ``DEDUPE_FLOOR`` are pixel-checked exactly as ``dedupe find`` checks them (``pixels``), RAW+JPEG
siblings (same folder and stem) are one item without a check, and photos a person marked "not duplicates" are never
folded together. The cost is the thumbnails of the hits that have a look-alike among them (a few tens of ms each).

WHICH hit stands for the group: the keeper by the rule's stages that need no file read, from what the index
stores: the preferred format (a camera original), then pixel count (within 1%), then file size, then search rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from lookalike.aggregate import l2_normalize
from lookalike.dedupe.copies import DEDUPE_FLOOR, DEDUPE_PIXEL
from lookalike.dedupe.decisions import Decisions
from lookalike.dedupe.formats import DedupeSettings, are_siblings, sibling_key
from lookalike.dedupe.geometry import confirm_copies
from lookalike.dedupe.keep import PIXEL_TOLERANCE
from lookalike.dedupe.pixels import pixel_scores, thumbnails

if TYPE_CHECKING:
    from lookalike.view import IndexView

M = TypeVar("M")


def copy_groups(
    index: IndexView,
    ids: Sequence[int],
    *,
    threshold: float = DEDUPE_FLOOR,
    pixel: float = DEDUPE_PIXEL,
    settings: DedupeSettings | None = None,
) -> list[list[int]]:
    """Groups of positions of ``ids`` (search hits, best first) that are copies of one photo, every position in
    exactly one group; each group's first position is its keeper, groups in the order of their best hit."""
    n = len(ids)
    if n < 2:
        return [[i] for i in range(n)]
    names = index.names
    x = l2_normalize(np.asarray(index.vectors[list(ids)], dtype=np.float32))
    sims = x @ x.T
    a, b = np.nonzero(np.triu(sims >= threshold, 1))
    parent = list(range(n))

    def find(p: int) -> int:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    hashes = index.hashes
    decisions = Decisions.load(index.folder)
    joined = [(int(i), int(j)) for i, j in zip(a, b, strict=True)]
    keys = [sibling_key(names[i]) for i in ids]
    siblings = {
        (i, j)
        for i in range(n)
        for j in range(i + 1, n)
        if keys[i] == keys[j] and are_siblings(names[ids[i]], names[ids[j]])
    }
    check = [p for p in joined if p not in siblings]
    if check and pixel > 0:
        used = sorted({i for p in check for i in p})
        coarse, fine, bad = thumbnails([index.paths[ids[u]] for u in used])
        at = {u: r for r, u in enumerate(used)}
        local = np.array([(at[i], at[j]) for i, j in check], np.int64)
        ok = ~np.isin(local, bad).any(axis=1)
        ncc = np.full(len(check), -1.0)
        if ok.any():
            ncc[ok] = pixel_scores(coarse, fine, local[ok])
            paths = [index.paths[ids[u]] for u in used]
            ncc[ok] = confirm_copies(paths, local[ok], ncc[ok], pixel, [])
        check = [p for p, s in zip(check, ncc, strict=True) if s >= pixel]
    for i, j in sorted(siblings) + check:
        if len(decisions) and decisions.separated(hashes[ids[i]], hashes[ids[j]]):
            continue
        parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [_keeper_first(index, ids, g, settings or DedupeSettings()) for g in groups.values()]


def _keeper_first(index: IndexView, ids: Sequence[int], group: list[int], settings: DedupeSettings) -> list[int]:
    if len(group) == 1:
        return group
    rows = index.metadata().select(["width", "height", "size"]).take(np.asarray([ids[g] for g in group])).to_pylist()
    pixels = [int(r["width"] or 0) * int(r["height"] or 0) for r in rows]
    top = max(pixels)

    def key(k: int) -> tuple[int, int, int, int]:
        same = pixels[k] >= top * (1 - PIXEL_TOLERANCE)
        return (settings.format_rank(index.names[ids[group[k]]]), not same, -int(rows[k]["size"] or 0), group[k])

    order = sorted(range(len(group)), key=key)
    return [group[k] for k in order]


def collapse_matches(index: IndexView, matches: Sequence[M]) -> list[M]:
    """Search matches (dataclasses with ``id``, ``rank`` and ``folded``), one per copy group: its keeper, ranked where
    the group's best hit was, ``folded`` the ids of the others (an empty list when it has no copies among the hits)."""
    ids = [m.id for m in matches]  # type: ignore[attr-defined]
    return [
        replace(matches[g[0]], rank=r + 1, folded=[int(ids[q]) for q in g[1:]])  # type: ignore[type-var]
        for r, g in enumerate(copy_groups(index, ids))
    ]
