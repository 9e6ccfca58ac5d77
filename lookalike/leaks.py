"""Leaks between a test set and an index: test images that are copies of indexed images, so that a figure measured
on them says how well the index remembers, not how well it generalises.

A test image leaks when an indexed image is

- **identical**: the same bytes (content hash);
- a **copy**: among its ``k`` nearest indexed images with cosine ≥ ``threshold`` (:data:`LEAK_FLOOR`, 0.84), and the two
  line up pixel for pixel (aligned NCC ≥ ``pixel``, 0.9; ``lookalike.dedupe.pixels``: rescaled, recompressed and
  cropped copies down to ~65 % of a side);
- **mirrored**: such a candidate whose pixels line up once the test image is mirrored (the descriptor is nearly
  mirror invariant, so a mirrored copy is a candidate already; checking its mirror costs one more pixel check);
- **turned** (``orientations=True``): the test image turned 90°, 180° or 270° is described again (three more model
  passes per test image) and its candidates are pixel-checked in that turn;
- a **near-copy**: a candidate that fails the pixel check but scores cosine ≥ ``near`` (:data:`NEAR_COPY`, 0.95):
  an edited copy (colours, overlays, a crop beyond the pixel check's range) or the same scene shot again a moment
  later. When the index holds local features of the twin (``lookalike features``), a near-copy must also be
  verified geometrically (RootSIFT, fundamental matrix, ≥ 15 inliers; ``lookalike.verify``); without them the
  cosine decides.

Copies inside the test set itself (the same checks among test images) are listed too: they do not inflate a
figure against the index, but they weigh one photo twice.

WHY: a test photo whose resized or mirrored copy is indexed is found at rank 1 and classified by its own label;
fastdup found 104K such train/val pairs in ImageNet-21K. Byte identity (``overlap``) misses every edited copy.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.dedupe.copies import DEDUPE_PIXEL, check_ranges
from lookalike.dedupe.orientations import INVERSE, ORIENTATIONS, turn_image, turned_pixel_scores
from lookalike.dedupe.pixels import pixel_scores, thumbnails
from lookalike.errors import ImageError, LookalikeError
from lookalike.images import decode, discover, read_file
from lookalike.progress import bar

if TYPE_CHECKING:
    from lookalike.view import IndexView

LEAK_FLOOR = 0.84
"""Cosine at or above which an indexed image is a candidate twin of a test image (pixel-checked). Higher than
``dedupe``'s 0.8: a test set is checked against a whole index of its own domain, and on the rooms photos different
shots with the same white letterbox borders lined up at pixel 0.90–0.95 with cosines of 0.81–0.83, while planted
copies cropped to 75–90 % of a side scored cosine ≥ 0.845 (BENCHMARKS.md, "Leak check"). Heavier crops can score
lower (an 80 % crop of a flower: 0.82–0.89): pass ``threshold=0.8`` to catch them at the risk of such pairs."""
NEAR_COPY = 0.95
"""Cosine at or above which a candidate that fails the pixel check is still a near-copy (verified by local features
when the index has them). On the rooms photos (GeM, EfficientNet-Lite0) different photos of one room type rarely
reach it (BENCHMARKS.md, "Leak check")."""
LEAK_K = 5
"""Indexed candidates per test image (as ``dedupe new``)."""
MIRROR = ORIENTATIONS.index("mirror")
KINDS = ("identical", "copy", "mirrored", "turned", "near-copy")


@dataclass
class LeakReport:
    """The leak check of a test set against an index.

    ``leaks``: one entry per leaking test image, ``{"path", "twins": [{"name", "id", "kind", "cosine", "pixel",
    "turn"?, "inliers"?}, ...]}`` (best twin first; ``turn``: the test image is its twin turned by it; ``path`` relative to the test folder, ``name`` to the photo
    folder); ``within_test``: pairs of test images that are copies of each other ``{"a", "b", "kind", "cosine",
    "pixel"}``; ``checked``: test images checked."""

    test_root: str
    index_root: str
    checked: int
    leaks: list[dict[str, Any]] = field(default_factory=list)
    within_test: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def leaked(self) -> set[str]:
        """Test paths (relative) that have a twin in the index."""
        return {x["path"] for x in self.leaks}

    def counts(self) -> dict[str, int]:
        """Leaking test images by the kind of their best twin."""
        out = dict.fromkeys(KINDS, 0)
        for x in self.leaks:
            out[x["twins"][0]["kind"]] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": self.test_root,
            "index": self.index_root,
            "checked": self.checked,
            "leaking": len(self.leaks),
            "by_kind": self.counts(),
            "leaks": self.leaks,
            "within_test": self.within_test,
            "settings": self.settings,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }

    def __len__(self) -> int:
        return len(self.leaks)

    def _repr_html_(self) -> str:
        from lookalike.display import leaks_html

        return leaks_html(self)


def refuse_nested(test_dir: str | os.PathLike[str], root: Path) -> None:
    """A test folder equal to, inside or around the indexed photo folder: every image would be its own leak."""
    test, photos = Path(test_dir).resolve(), Path(root).resolve()
    if test == photos or photos in test.parents:
        raise LookalikeError(
            f"the test folder {test_dir} is {'the' if test == photos else 'inside the'} indexed folder {photos}: "
            "every test image would be its own leak; give a test folder outside it"
        )
    if test in photos.parents:
        raise LookalikeError(
            f"the test folder {test_dir} holds the indexed folder {photos}: every indexed image would be its own "
            "leak; give a test folder beside it"
        )


def find_leaks(
    index: IndexView,
    vectors: np.ndarray,
    paths: Sequence[Path],
    hashes: Sequence[str],
    *,
    test_root: str | os.PathLike[str],
    threshold: float = LEAK_FLOOR,
    pixel: float = DEDUPE_PIXEL,
    near: float = NEAR_COPY,
    k: int = LEAK_K,
    orientations: bool = False,
    within: bool = True,
    progress: bool = False,
) -> LeakReport:
    """The leak check of test images already described as the index was (``vectors`` row i is ``paths[i]``, whose
    content hash is ``hashes[i]``); see the module docstring."""
    check_ranges(threshold, pixel)
    if not -1.0 <= near <= 1.0:
        raise LookalikeError(f"near is a cosine similarity in [-1, 1], got {near}")
    started = time.perf_counter()
    refuse_nested(test_root, index.root)
    root = Path(test_root)
    names = index.names
    notes: list[str] = []
    found: dict[int, list[dict[str, Any]]] = {}
    for r, h in enumerate(hashes):
        for i in index.hash_ids(h) if h else []:
            _add(found, r, {"name": names[i], "id": int(i), "kind": "identical", "cosine": 1.0, "pixel": 1.0})

    vectors = np.asarray(vectors, np.float32).reshape(len(paths), -1)
    cand = _candidates(
        index, vectors, paths, threshold, near, k, orientations=orientations, progress=progress, notes=notes
    )
    if len(cand):  # identical twins are known already
        cand = cand[np.array([int(i) not in {t["id"] for t in found.get(int(r), [])} for r, i in cand[:, :2]], bool)]
    checked_pairs = 0
    thumbs = None
    if len(cand):
        twins, checked_pairs, thumbs = _check_candidates(index, paths, cand, threshold, pixel, near, notes)
        for r, twin in twins:
            _add(found, r, twin)
    order = {kd: n for n, kd in enumerate(KINDS)}
    leaks = []
    for r in sorted(found, key=lambda r: _rel(paths[r], root)):
        twins = sorted(found[r], key=lambda t: (order[t["kind"]], -(t["pixel"] or 0), -t["cosine"]))
        leaks.append({"path": _rel(paths[r], root), "twins": twins})
    pairs_inside = _within(vectors, paths, hashes, root, threshold, pixel, near, k, thumbs) if within else []
    report = LeakReport(
        test_root=str(root),
        index_root=str(index.root),
        checked=len(paths),
        leaks=leaks,
        within_test=pairs_inside,
        settings={"threshold": threshold, "pixel": pixel, "near": near, "k": k, "orientations": orientations},
        notes=notes,
    )
    report.settings["checked_pairs"] = checked_pairs
    report.seconds = time.perf_counter() - started
    return report


def _add(found: dict[int, list[dict[str, Any]]], r: int, twin: dict[str, Any]) -> None:
    """Test row ``r`` has this twin (once per indexed image: the first kind found stays)."""
    have = found.setdefault(r, [])
    if all(t["id"] != twin["id"] for t in have):
        have.append(twin)


def _candidates(
    index: IndexView,
    vectors: np.ndarray,
    paths: Sequence[Path],
    threshold: float,
    near: float,
    k: int,
    *,
    orientations: bool,
    progress: bool,
    notes: list[str],
) -> np.ndarray:
    """Candidate twins, one row each: (test row, index id, turn or -1, cosine). Upright from cosine ≥ min(threshold,
    near) (near-copies need no pixel check), turned (``orientations``) from cosine ≥ ``threshold``."""
    rows: list[np.ndarray] = []
    if len(vectors) and len(index):
        depth = min(k, len(index))
        scores, ids = index.searcher.search(vectors, depth)
        q, c = np.nonzero((ids >= 0) & (scores >= min(threshold, near)))
        rows.append(np.stack([q, ids[q, c], np.full(len(q), -1), scores[q, c]], axis=1))
        if orientations:
            turned = _turned_vectors(index, paths, progress=progress, notes=notes)
            for t in range(3):  # rotations; the mirror is checked on every candidate below
                live = np.flatnonzero(np.abs(turned[:, t]).sum(axis=1) > 0)
                if not len(live):
                    continue
                s2, i2 = index.searcher.search(np.ascontiguousarray(turned[live, t]), depth)
                q2, c2 = np.nonzero((i2 >= 0) & (s2 >= threshold))
                rows.append(np.stack([live[q2], i2[q2, c2], np.full(len(q2), t), s2[q2, c2]], axis=1))
    return np.concatenate(rows) if rows else np.zeros((0, 4))


def _check_candidates(
    index: IndexView,
    paths: Sequence[Path],
    cand: np.ndarray,
    threshold: float,
    pixel: float,
    near: float,
    notes: list[str],
) -> tuple[list[tuple[int, dict[str, Any]]], int, tuple[np.ndarray, np.ndarray, list[int]]]:
    """The candidates that are twins — pixel-checked upright, turned or mirrored, else near-copies by cosine (and
    local features when the index has them) — as (test row, twin); the pairs pixel-checked; the test images'
    thumbnails (coarse, fine, unreadable rows), reused for the check inside the test set."""
    names = index.names
    n_test = len(paths)
    checked = 0
    out: list[tuple[int, dict[str, Any]]] = []
    tr, ix, turn, cos = cand[:, 0].astype(np.int64), cand[:, 1].astype(np.int64), cand[:, 2].astype(int), cand[:, 3]
    used = np.unique(ix)
    coarse, fine, bad = thumbnails([*paths, *(index.root / names[j] for j in used)])
    thumbs = (coarse[:n_test], fine[:n_test], [b for b in bad if b < n_test])  # the test images' own, reused
    col = np.full(len(index), -1)
    col[used] = n_test + np.arange(len(used))
    pairs = np.stack([tr, col[ix]], axis=1)
    readable = ~np.isin(pairs, bad).any(axis=1)
    if not readable.all():
        notes.append(f"{len(bad)} image(s) could not be read for the pixel check; their candidates are left out")
    ncc = np.full(len(cand), -2.0, np.float32)
    kind = np.array([""] * len(cand), dtype=object)
    upright = readable & (turn < 0) & (cos >= threshold)
    if upright.any():
        ncc[upright] = pixel_scores(coarse, fine, pairs[upright])
        checked += int(upright.sum())
    kind[upright & (ncc >= pixel)] = "copy"
    for t in sorted({int(x) for x in turn[turn >= 0]}):
        sel = readable & (turn == t)
        ncc[sel] = turned_pixel_scores(coarse, fine, pairs[sel], np.full(int(sel.sum()), t))
        checked += int(sel.sum())
        kind[sel & (ncc >= pixel)] = "turned"
    mirror = upright & (kind == "")
    if mirror.any():
        m = turned_pixel_scores(coarse, fine, pairs[mirror], np.full(int(mirror.sum()), MIRROR))
        checked += int(mirror.sum())
        better = m >= pixel
        sel = np.flatnonzero(mirror)[better]
        ncc[sel], kind[sel] = m[better], "mirrored"
    close = (kind == "") & (turn < 0) & (cos >= near)
    inliers = np.full(len(cand), -1)
    if close.any():
        verdicts = _verify_near(index, paths, tr[close], ix[close], notes)
        sel = np.flatnonzero(close)
        for s, v in zip(sel, verdicts, strict=True):
            if v is None or v >= 0:
                kind[s] = "near-copy"
                inliers[s] = -1 if v is None else v
    for p in np.flatnonzero(kind != ""):
        twin: dict[str, Any] = {
            "name": names[ix[p]],
            "id": int(ix[p]),
            "kind": str(kind[p]),
            "cosine": round(float(cos[p]), 4),
            "pixel": round(float(ncc[p]), 4) if ncc[p] > -2 else None,
        }
        if kind[p] == "turned":
            twin["turn"] = ORIENTATIONS[INVERSE[int(turn[p])]]  # the test image is its twin turned by this
        if inliers[p] >= 0:
            twin["inliers"] = int(inliers[p])
        out.append((int(tr[p]), twin))
    return out, checked, thumbs


def _rel(p: Path, root: Path) -> str:
    try:
        return Path(p).relative_to(root).as_posix()
    except ValueError:
        return str(p)


def _turned_vectors(index: IndexView, paths: Sequence[Path], *, progress: bool, notes: list[str]) -> np.ndarray:
    """(N, 3, dim): each test image turned 90°, 180° and 270°, described as the index was (zeros if unreadable)."""
    describer = index.describer
    out = np.zeros((len(paths), 3, index.dim), np.float32)
    bad = 0
    with bar("test images turned", len(paths), progress and len(paths) > 0) as tick:
        for s in range(0, len(paths), 8):
            images, rows = [], []
            for r in range(s, min(s + 8, len(paths))):
                try:
                    img = decode(read_file(paths[r]), str(paths[r]), target=describer.decode_size)[0]
                except ImageError:
                    bad += 1
                    continue
                images += [turn_image(img, t) for t in range(3)]
                rows.append(r)
            if images:
                out[rows] = describer.describe_images(images).reshape(len(rows), 3, -1)
            tick.advance(min(s + 8, len(paths)) - s)
    if bad:
        notes.append(f"{bad} test image(s) could not be read to describe them turned")
    return out


def _verify_near(
    index: IndexView, paths: Sequence[Path], rows: np.ndarray, ids: np.ndarray, notes: list[str]
) -> list[int | None]:
    """Per near-copy candidate: None when the twin has no cached local features (the cosine decides), else the
    inliers of a verified geometric match, or -1 when the features say the two are not the same scene."""
    cache = index.features
    have = set(ids.tolist()) - set(cache.missing(sorted(set(ids.tolist()))))
    if not have:
        return [None] * len(rows)
    from lookalike.verify import MatchConf, extract, verify

    conf = MatchConf()
    mine: dict[int, Any] = {}
    out: list[int | None] = []
    for r, i in zip(rows.tolist(), ids.tolist(), strict=True):
        if i not in have:
            out.append(None)
            continue
        if r not in mine:
            try:
                img = decode(read_file(paths[r]), str(paths[r]), target=cache.conf.resolution)[0]
                mine[r] = extract(img, cache.conf)
            except ImageError:
                mine[r] = None
        v = verify(mine[r], cache.get(i), conf)
        out.append(v.inliers if v.verified else -1)
    verified = sum(1 for x in out if x is not None and x >= 0)
    notes.append(
        f"{verified} of {sum(1 for x in out if x is not None)} near-copy candidates verified by local features"
    )
    return out


def _within(
    vectors: np.ndarray,
    paths: Sequence[Path],
    hashes: Sequence[str],
    root: Path,
    threshold: float,
    pixel: float,
    near: float,
    k: int,
    thumbs: tuple[np.ndarray, np.ndarray, list[int]] | None,
) -> list[dict[str, Any]]:
    """Pairs of test images that are copies of each other: identical bytes, pixel-checked candidates (upright or
    mirrored), or cosine ≥ ``near``."""
    from lookalike.dedupe.copies import candidate_pairs

    out: dict[tuple[int, int], dict[str, Any]] = {}
    by_hash: dict[str, list[int]] = {}
    for r, h in enumerate(hashes):
        if h:
            by_hash.setdefault(h, []).append(r)
    for same in by_hash.values():
        for a, b in itertools.pairwise(same):
            out[a, b] = {"kind": "identical", "cosine": 1.0, "pixel": 1.0}
    if len(vectors) >= 2:
        cand = candidate_pairs(vectors, min(threshold, near), k, paths=None)
        pairs, cos = cand.pairs, cand.cosine
        if len(pairs):
            if thumbs is not None:  # computed for the check against the index: rows are the test images
                coarse, fine, bad_rows = thumbs
                bad = np.asarray(bad_rows, np.int64)
                local = pairs
            else:
                used = np.unique(pairs)
                coarse, fine, bad_local = thumbnails([paths[u] for u in used])
                bad = used[bad_local] if bad_local else np.zeros(0, np.int64)
                row = np.full(len(paths), -1)
                row[used] = np.arange(len(used))
                local = row[pairs]
            ok = ~np.isin(pairs, bad).any(axis=1) & (cos >= threshold)
            ncc = np.full(len(pairs), -2.0, np.float32)
            if ok.any():
                ncc[ok] = pixel_scores(coarse, fine, local[ok])
            retry = ok & (ncc < pixel)
            if retry.any():
                m = turned_pixel_scores(coarse, fine, local[retry], np.full(int(retry.sum()), MIRROR))
                sel = np.flatnonzero(retry)
                ncc[sel] = np.where(m >= pixel, m, ncc[sel])
                mirrored = set(sel[m >= pixel].tolist())
            else:
                mirrored = set()
            for p, (a, b) in enumerate(pairs.tolist()):
                if (a, b) in out:
                    continue
                if ncc[p] >= pixel:
                    kind = "mirrored" if p in mirrored else "copy"
                elif cos[p] >= near:
                    kind = "near-copy"
                else:
                    continue
                out[a, b] = {"kind": kind, "cosine": round(float(cos[p]), 4),
                             "pixel": round(float(ncc[p]), 4) if ncc[p] > -2 else None}  # fmt: skip
    return [{"a": _rel(paths[a], root), "b": _rel(paths[b], root), **v} for (a, b), v in sorted(out.items())]


def describe_folder(
    index: IndexView, folder: str | os.PathLike[str], *, progress: bool = False
) -> tuple[np.ndarray, list[Path], list[str], list[tuple[str, str]]]:
    """Every image of ``folder`` described as the index was: (vectors, paths, content hashes, (path, why) skipped)."""
    src = Path(folder)
    if not src.is_dir():
        raise LookalikeError(f"not a folder: {folder}")
    found = discover(src, exclude=[index.folder])
    if not found.files:
        raise LookalikeError(f"no images found in {folder}")
    skipped = [(str(p), why) for p, why in found.skipped]
    vecs, paths, hashes = [], [], []
    with bar("describing test images", len(found.files), progress) as tick:
        for batch in index.describer.describe_files(list(found.files)):
            for item in batch.items:
                if item.error:
                    skipped.append((str(item.path), item.error))
            if batch.described:
                vecs.append(batch.vectors)
                paths.extend(item.path for item in batch.described)
                hashes.extend(item.hash or "" for item in batch.described)
            tick.advance(len(batch.items))
    if not paths:
        raise LookalikeError(f"none of the {len(found.files)} images in {folder} could be read")
    return np.concatenate(vecs), paths, hashes, skipped


def check_leaks(
    index: IndexView,
    test_dir: str | os.PathLike[str],
    *,
    threshold: float = LEAK_FLOOR,
    pixel: float = DEDUPE_PIXEL,
    near: float = NEAR_COPY,
    k: int = LEAK_K,
    orientations: bool = False,
    progress: bool = False,
) -> LeakReport:
    """`lookalike leaks`: every image of ``test_dir`` (labelled or not) checked against the index."""
    refuse_nested(test_dir, index.root)
    if len(index) == 0:
        raise LookalikeError(f"the index at {index.folder} is empty")
    vectors, paths, hashes, skipped = describe_folder(index, test_dir, progress=progress)
    report = find_leaks(
        index, vectors, paths, hashes, test_root=test_dir, threshold=threshold, pixel=pixel, near=near, k=k,
        orientations=orientations, progress=progress,
    )  # fmt: skip
    if skipped:
        report.notes.insert(
            0, f"{len(skipped)} test file(s) could not be read (first: {skipped[0][0]}: {skipped[0][1]})"
        )
    return report


def split_leaks(
    vectors: np.ndarray,
    paths: Sequence[Path],
    train: np.ndarray,
    held_out: np.ndarray,
    *,
    threshold: float = LEAK_FLOOR,
    pixel: float = DEDUPE_PIXEL,
    k: int = LEAK_K,
) -> list[dict[str, Any]]:
    """Held-out rows that are copies (identical, pixel-checked upright or mirrored) of training rows, for
    ``lookalike train``'s warning: ``[{"held_out": path, "train": path, "pixel": ncc}]``. ``vectors`` are
    L2-normalised, one per path."""
    from lookalike.search import exact_topk

    if not len(train) or not len(held_out):
        return []
    x = np.ascontiguousarray(vectors, np.float32)
    scores, ids = exact_topk(x[held_out], x[train], min(k, len(train)))
    q, c = np.nonzero((ids >= 0) & (scores >= threshold))
    if not len(q):
        return []
    pairs_global = np.stack([held_out[q], train[ids[q, c]]], axis=1)
    used = np.unique(pairs_global)
    coarse, fine, bad = thumbnails([paths[u] for u in used])
    row = np.full(len(paths), -1)
    row[used] = np.arange(len(used))
    local = row[pairs_global]
    ok = ~np.isin(local, bad).any(axis=1)
    ncc = np.full(len(local), -2.0, np.float32)
    if ok.any():
        ncc[ok] = pixel_scores(coarse, fine, local[ok])
    retry = ok & (ncc < pixel)
    if retry.any():
        m = turned_pixel_scores(coarse, fine, local[retry], np.full(int(retry.sum()), MIRROR))
        ncc[np.flatnonzero(retry)] = np.maximum(ncc[retry], m)
    out: dict[int, dict[str, Any]] = {}
    for (a, b), s in zip(pairs_global.tolist(), ncc.tolist(), strict=True):
        if s >= pixel and (a not in out or s > out[a]["pixel"]):
            out[a] = {"held_out": str(paths[a]), "train": str(paths[b]), "pixel": round(float(s), 4)}
    return [out[a] for a in sorted(out)]
