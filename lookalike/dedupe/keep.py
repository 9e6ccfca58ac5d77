"""Which copy of a duplicate group to keep, and why.

WHY a tournament of tolerant stages rather than one sort key: a float such as sharpness never ties, so in a plain
lexicographic sort the later criteria (file size, EXIF) would never decide anything. Each stage instead keeps every
candidate within a tolerance of the best and hands the survivors to the next stage, so a recompressed copy that is
"as sharp" as its original (JPEG blocking adds edges of its own) still loses on file size.

The default rule, ``best`` (also called ``original``):

0. the settings' preferences (``lookalike.dedupe.formats.DedupeSettings``), before anything is measured: a copy under
   a ``prefer`` folder (the first given first), then the preferred file format (a camera original, RAW, HEIC or
   AVIF, beats its JPEG/PNG/WebP conversion, whatever their sizes), then not an edit (the EXIF ``Software`` of an
   editor; the rule ``edited`` puts the edit first instead),
1. pixel count (width × height as stored; within 1% counts as equal),
2. not a re-save: a JPEG whose coefficients still sit on another same-size JPEG's coarser quantisation steps was
   re-saved from it at a finer quality (bigger and as sharp, no better) and loses to it (``resaved_from``),
3. sharpness: variance of the Laplacian (of Gaussian) of a fixed-size grey copy (the central ``SHARP_SIDE``² crop at
   native resolution: the survivors of stage 1 have the same pixel count; within ``SHARP_TOLERANCE`` of the sharpest
   counts as equal),
4. finer JPEG quantisation: of two same-size JPEGs, the one whose luma quantisation steps are all at least as
   large, and one larger, kept less of the image and loses (``coarser``); tables that do not order that way (other
   encoders) decide nothing,
5. file size (larger wins: less compression),
6. EXIF completeness: capture time, GPS, camera make/model (the copy that kept its metadata),
7. the oldest capture time (EXIF, else file mtime), then path order, so the choice is always deterministic.

WHY quantisation before file size: the size of a JPEG measures its encoder's options as much as what it kept.
flowers12's photos are saved with optimised Huffman tables (8,977 B; the same coefficients with the standard tables
take 9,374 B), so a copy re-saved from them by Pillow at a *coarser* quality (70 vs 75) was the larger file (9,103 B)
and won on size in 20 of 500 generated groups. The quantisation steps say directly how much was thrown away. Stage 2
runs first, so a copy re-saved from the original at a finer quality has already lost when this stage compares
tables (a finer table is only evidence of more detail when it was not filled from a coarser file).

The other rules put one criterion first and fall back to ``best``: ``oldest``/``newest`` (capture time), ``largest``
(file size), ``path-order`` (the first path in sorted order); ``edited`` is ``best`` with edited copies first.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from lookalike.dedupe.formats import DedupeSettings, editor_of, format_of, header_tags, under
from lookalike.errors import ConfigError, ImageError
from lookalike.images import decode, read_file

KEEP_RULES = ("best", "original", "edited", "oldest", "newest", "largest", "path-order")
SHARP_SIDE = 512  # sharpness is measured on the central SHARP_SIDE² crop at native resolution (a fixed-size copy)
SHARP_TOLERANCE = 0.05  # sharpness within 5% of the sharpest counts as equally sharp
SHARP_SIGMA = 2.0  # Gaussian smoothing before the Laplacian: JPEG artefacts must not read as detail
PIXEL_TOLERANCE = 0.01
_MAKE, _MODEL = 0x010F, 0x0110


@dataclass
class FileFacts:
    """What the ranking looks at for one file. ``time`` is the EXIF capture time, else the file's mtime (ISO)."""

    name: str
    width: int
    height: int
    size: int
    sharpness: float
    exposure: float  # 1 = no clipped pixels; falls with the fraction of blown-out or crushed pixels
    exif_time: str | None
    gps: bool
    camera: bool
    time: str
    qtable: list[int] | None = None  # the JPEG luminance quantisation table (natural order), None if not a JPEG
    dct: np.ndarray | None = field(default=None, repr=False)  # luma DCT blocks (B, 8, 8) of the central region
    format: str = ""  # raw, heic, avif, png, jpeg, webp, tiff, other (lookalike.dedupe.formats.format_of)
    editor: str | None = None  # the EXIF Software of an editor (an edited copy), else None
    camera_name: str | None = None  # EXIF make and model
    mtime: str = ""  # the file's modification time (ISO)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def exif_complete(self) -> int:
        return int(self.exif_time is not None) + int(self.gps) + int(self.camera)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("dct")
        d.pop("qtable")
        d["sharpness"] = round(self.sharpness, 2)
        d["exposure"] = round(self.exposure, 4)
        return d


def sharpness_and_exposure(img: Image.Image) -> tuple[float, float]:
    """Variance of the Laplacian of Gaussian (σ = ``SHARP_SIGMA``) over the central ``SHARP_SIDE``² grey crop at
    native resolution, and 1 − the fraction of clipped pixels (≤ 2 or ≥ 253) of the whole image: a blurred frame
    loses the first, an over- or under-exposed one the second.

    WHY native resolution and σ = 2: the copies this compares have the same pixel count (the stage before), and a
    mild blur (σ 0.6 px) vanishes in a downscaled copy — at 128 px it lost to its original in only 93% of generated
    groups. The smoothing keeps JPEG artefacts from reading as detail: the plain Laplacian scores a copy recompressed
    at quality 50–70 up to 2.3× *sharper* than its quality-75 original; with σ = 2 that falls to ≤ 1.04× while every
    σ ≥ 0.6 px blur stays below 0.9× (167 generated rooms/flowers groups)."""
    grey = np.asarray(img.convert("L"), np.uint8)
    h, w = grey.shape
    ch, cw = min(SHARP_SIDE, h), min(SHARP_SIDE, w)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = grey[y0 : y0 + ch, x0 : x0 + cw].astype(np.float32)
    lap = ndimage.gaussian_laplace(crop, SHARP_SIGMA)
    m = min(4, max(0, min(ch, cw) // 4))
    lap = lap[m : ch - m, m : cw - m] if m else lap
    clipped = float(((grey <= 2) | (grey >= 253)).mean())
    return float(lap.var()), 1.0 - clipped


def jpeg_blocks(data: bytes, blocks: int = 32) -> tuple[list[int] | None, np.ndarray | None]:
    """(luma quantisation table, DCT coefficients of up to ``blocks``² 8×8 luma blocks from the centre, on the file's
    own block grid), or (None, None) for a file that is not a JPEG."""
    from scipy.fft import dctn

    try:
        img = Image.open(io.BytesIO(data))
        if img.format != "JPEG" or not getattr(img, "quantization", None):
            return None, None
        table = list(img.quantization[0])
        img.draft("YCbCr", img.size)  # decoder output as stored: no colour conversion rounding
        y = np.asarray(img.convert("L") if img.mode not in ("YCbCr", "L") else img, np.float32)
    except Exception:  # anything odd in the file: no lineage evidence, never an error
        return None, None
    if y.ndim == 3:
        y = y[..., 0]
    by, bx = min(blocks, y.shape[0] // 8), min(blocks, y.shape[1] // 8)
    if by < 2 or bx < 2 or len(table) != 64:
        return None, None
    y0, x0 = (y.shape[0] // 8 - by) // 2 * 8, (y.shape[1] // 8 - bx) // 2 * 8
    tiles = y[y0 : y0 + by * 8, x0 : x0 + bx * 8].reshape(by, 8, bx, 8).transpose(0, 2, 1, 3) - 128.0
    return table, dctn(tiles, axes=(2, 3), norm="ortho").reshape(-1, 8, 8)


LOW_FREQ = np.add.outer(np.arange(8), np.arange(8)) <= 4  # coefficients a JPEG keeps at any usual quality


def resaved_from(source: FileFacts, copy: FileFacts, near: float = 0.75, empty: float = 0.35) -> bool:
    """Whether ``copy`` is ``source`` re-saved at a finer JPEG quality (same pixel grid): its coefficients still sit
    on ``source``'s coarser quantisation steps, which only happens when they passed through that quantiser.

    Two tests, either suffices. **On the grid**: ≥ ``near`` of the copy's live coefficients lie within 0.15 of a
    multiple of the source's step (a re-save at a much finer quality, q75 → 90+). **Reachable values**: at a
    moderately finer quality (q75 → 80–85, steps 1.2–1.7× finer) a multiple k·qa of the source's step lands between
    the copy's steps and is rounded to round(k·qa/qb), so some of the copy's values m can never occur; a re-save has
    (almost) only reachable values, while an independently compressed file's histogram is smooth: the unreachable
    values holding ≤ ``empty`` of what their neighbours hold recognise a re-save (:func:`unreachable_ratio`).

    WHY: a JPEG re-saved at a higher quality is a bigger file with no more information, and as sharp, so neither
    file size nor sharpness can tell it from its source (on the rooms photos, saved at quality 75, re-saves at
    quality 76-80 won both). Double-compression traces can."""
    if source.qtable is None or copy.qtable is None or source.dct is None or copy.dct is None:
        return False
    if (source.width, source.height) != (copy.width, copy.height):
        return False
    qa = np.asarray(source.qtable, np.float32).reshape(8, 8)
    qb = np.asarray(copy.qtable, np.float32).reshape(8, 8)
    mask = LOW_FREQ & (qa >= 2)
    if not mask.any() or not (qa[mask] >= qb[mask]).all() or not (qa[mask] > qb[mask]).any():
        return False
    ratio = copy.dct[:, mask] / qa[mask]
    live = np.abs(ratio) >= 0.5  # zero coefficients sit on every grid
    if live.sum() < 100:
        return False
    if float((np.abs(ratio - np.round(ratio))[live] < 0.15).mean()) >= near:
        return True
    return unreachable_ratio(qa, qb, copy.dct) <= empty


def unreachable_ratio(qa: np.ndarray, qb: np.ndarray, dct: np.ndarray, min_expected: float = 200.0) -> float:
    """How full the values a re-save from steps ``qa`` could never produce are, in the copy's coefficients (steps
    ``qb``): over positions where qa is 1.15–2.5× qb, the values m = round(dct / qb) that no multiple k·qa rounds to
    hold (count at m) / (mean count at m ± 1). About 0 for a re-save (those values stay empty), about 1 for an
    independent compression (a histogram is smooth); 1.0 (no evidence) when fewer than ``min_expected`` values
    would be expected in them."""
    r = qa / np.maximum(qb, 1)
    mask = LOW_FREQ & (qb >= 2) & (r >= 1.15) & (r <= 2.5)
    seen = expected = 0.0
    for y, x in zip(*np.nonzero(mask), strict=True):
        m = np.round(dct[:, y, x] / qb[y, x]).astype(np.int64)
        top = int(np.abs(m).max()) + 2
        counts = np.bincount(m + top, minlength=2 * top + 1).astype(np.float64)
        values = np.arange(-top + 1, top)
        k = np.floor(values / r[y, x])
        reach = (np.abs(k * r[y, x] - values) <= 0.5 + 1e-6) | (np.abs((k + 1) * r[y, x] - values) <= 0.5 + 1e-6)
        gaps = values[~reach] + top
        seen += counts[gaps].sum()
        expected += ((counts[gaps - 1] + counts[gaps + 1]) / 2).sum()
    return seen / expected if expected >= min_expected else 1.0


def coarser(a: FileFacts, b: FileFacts) -> bool:
    """Whether JPEG ``a`` was quantised more coarsely than JPEG ``b`` on the same pixel grid: every luma quantisation
    step of ``a`` at least as large as ``b``'s and one larger, so ``a`` rounded away at least what ``b`` did.

    WHY a dominance test and not an estimated quality number: tables from different encoders (cameras, phone
    software) are shaped differently, and one that is finer in the low frequencies and coarser in the high ones is
    not "better" in any sense this ranking can defend; such pairs are left to the later stages."""
    if a.qtable is None or b.qtable is None or len(a.qtable) != len(b.qtable):
        return False
    if (a.width, a.height) != (b.width, b.height):
        return False
    qa, qb = np.asarray(a.qtable), np.asarray(b.qtable)
    return bool((qa >= qb).all() and (qa > qb).any())


def file_facts(path: str | os.PathLike[str], name: str, row: dict[str, Any] | None = None) -> FileFacts:
    """Facts of one file, read from disk (EXIF camera, sharpness); ``row`` (an index row) supplies what the index
    already knows (size as stored, capture time, GPS) so the numbers agree with the index."""
    data = read_file(path)
    img, meta = decode(data, str(path))  # native resolution: sharpness is judged on the pixels as stored
    try:
        exif = Image.open(io.BytesIO(data)).getexif()  # the header only
        camera = bool(exif.get(_MAKE) or exif.get(_MODEL))
    except Exception:  # malformed EXIF is no camera, never an error
        camera = False
    camera_name, software = header_tags(data)
    sharp, exposure = sharpness_and_exposure(img)
    qtable, dct = jpeg_blocks(data)
    row = row or {}
    exif_time = row.get("exif_time", meta.exif_time)
    gps = row.get("gps_lat", meta.gps_lat) is not None
    mtime = datetime.fromtimestamp(Path(path).stat().st_mtime, UTC).replace(tzinfo=None).isoformat()
    return FileFacts(
        name=name,
        width=int(row.get("width") or meta.width),
        height=int(row.get("height") or meta.height),
        size=len(data),
        sharpness=sharp,
        exposure=exposure,
        exif_time=exif_time,
        gps=gps,
        camera=camera,
        time=exif_time or mtime,
        qtable=qtable,
        dct=dct,
        format=format_of(name),
        editor=editor_of(software),
        camera_name=camera_name,
        mtime=mtime,
    )


def facts_of(
    paths: Sequence[str | os.PathLike[str]], names: Sequence[str], rows: Sequence[dict[str, Any] | None] | None = None
) -> list[FileFacts | ImageError]:
    """:func:`file_facts` of many files on a few threads; an unreadable file gives its ``ImageError`` in its place."""

    def one(i: int) -> FileFacts | ImageError:
        try:
            return file_facts(paths[i], names[i], rows[i] if rows else None)
        except ImageError as exc:
            return exc
        except OSError as exc:
            return ImageError(f"{paths[i]}: cannot read ({exc.strerror or exc})")

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(one, range(len(paths))))


# Each stage: (name, value to maximise, tolerance test, how to say why it won).
def _within(rel: float) -> Callable[[float, float], bool]:
    return lambda value, best: value >= best - rel * abs(best)


def _exact(value: float, best: float) -> bool:
    return value >= best


def _epoch(t: str) -> float:
    return datetime.fromisoformat(t).replace(tzinfo=None).timestamp()


_STAGES: dict[str, tuple[Callable[[FileFacts], float], Callable[[float, float], bool], str]] = {
    "source": (lambda f: 0.0, _exact, "not a finer re-save of another copy"),
    "pixels": (lambda f: float(f.pixels), _within(PIXEL_TOLERANCE), "most pixels"),
    "sharpness": (lambda f: f.sharpness, _within(SHARP_TOLERANCE), "sharpest"),
    "quant": (lambda f: 0.0, _exact, "finer JPEG quantisation"),
    "size": (lambda f: float(f.size), _exact, "largest file"),
    "exif": (lambda f: float(f.exif_complete), _exact, "most complete EXIF"),
    "oldest": (lambda f: -_epoch(f.time), _exact, "oldest capture time"),
    "newest": (lambda f: _epoch(f.time), _exact, "newest capture time"),
}
_MEASURED = ("pixels", "source", "sharpness", "quant", "size", "exif")
_ORDERS = {
    "best": ("folder", "format", "original", *_MEASURED, "oldest"),
    "original": ("folder", "format", "original", *_MEASURED, "oldest"),
    "edited": ("folder", "edited", "format", *_MEASURED, "oldest"),
    "oldest": ("oldest", "folder", "format", "original", *_MEASURED),
    "newest": ("newest", "folder", "format", "original", *_MEASURED),
    "largest": ("size", "folder", "format", "original", "pixels", "source", "sharpness", "quant", "exif", "oldest"),
    "path-order": (),
}


def _describe(stage: str, winner: FileFacts, beaten: list[FileFacts], said: str | None = None) -> str:
    def show(f: FileFacts) -> str:
        return {
            "pixels": f"{f.width}×{f.height}",
            "sharpness": f"{f.sharpness:.0f}",
            "size": f"{f.size:,} B",
            "exif": f"{f.exif_complete}/3",
            "source": "source",
            "quant": f"luma steps Σ {sum(f.qtable or [])}",
            "oldest": f.time,
            "newest": f.time,
            "format": f.format,
            "original": "original" if f.editor is None else f"edited ({f.editor})",
            "edited": "original" if f.editor is None else f"edited ({f.editor})",
            "folder": (f.name.rsplit("/", 1)[0] if "/" in f.name else "."),
        }[stage]

    others = ", ".join(sorted({show(f) for f in beaten}))
    return f"{said or _STAGES[stage][2]}: {show(winner)} vs {others}"


def _preferences(
    settings: DedupeSettings | None, prefer: Sequence[str]
) -> dict[str, tuple[Callable[[FileFacts], float], Callable[[float, float], bool], str]]:
    """The stages that follow the settings: preferred folders, formats, edits."""
    settings = settings or DedupeSettings()

    def folder(f: FileFacts) -> float:
        at = under(f.name, prefer)
        return -float(prefer.index(at)) if at is not None else -float(len(prefer))

    return {
        "folder": (folder, _exact, "in a preferred folder"),
        "format": (lambda f: -float(settings.format_rank(f.name)), _exact, "preferred format (camera original)"),
        "original": (lambda f: -float(f.editor is not None), _exact, "not an edited copy"),
        "edited": (lambda f: float(f.editor is not None), _exact, "the edited copy"),
    }


def choose_keeper(
    facts: Sequence[FileFacts],
    rule: str = "best",
    settings: DedupeSettings | None = None,
    prefer: Sequence[str] = (),
) -> tuple[list[int], str]:
    """(order, why): positions of ``facts`` best first, and one line saying which stages made the first win.
    ``settings``: the format order; ``prefer``: folders (relative to the photo folder) whose copies win, in order."""
    if rule not in _ORDERS:
        raise ConfigError(f"keep must be one of {', '.join(KEEP_RULES)}, got {rule!r}", setting="keep")
    left = sorted(range(len(facts)), key=lambda i: facts[i].name)
    if rule == "path-order":
        return left, f"first in path order: {facts[left[0]].name}" if left else ""
    stages = {**_STAGES, **_preferences(settings, prefer)}
    order: list[int] = []
    why = ""
    while left:
        alive = list(left)
        reasons: list[str] = []
        for stage in _ORDERS[rule]:
            value, close, said = stages[stage]
            if stage == "source":  # a file re-saved from another one in the running loses to it
                derived = {b for b in alive for a in alive if a != b and resaved_from(facts[a], facts[b])}
                keep = [i for i in alive if i not in derived] or alive
                if len(keep) < len(alive):
                    reasons.append(f"{len(alive) - len(keep)} other(s) re-saved from it at a finer JPEG quality")
                alive = keep
                if len(alive) == 1:
                    break
                continue
            if stage == "quant":  # a JPEG quantised more coarsely than another one in the running loses to it
                worse = {b for b in alive for a in alive if a != b and coarser(facts[b], facts[a])}
                keep = [i for i in alive if i not in worse] or alive
                if len(keep) < len(alive):
                    top = min(keep, key=lambda i: sum(facts[i].qtable or [0]))
                    reasons.append(_describe(stage, facts[top], [facts[i] for i in alive if i not in keep]))
                alive = keep
                if len(alive) == 1:
                    break
                continue
            best = max(value(facts[i]) for i in alive)
            keep = [i for i in alive if close(value(facts[i]), best)]
            if len(keep) < len(alive):
                top = max(keep, key=lambda i: value(facts[i]))
                reasons.append(_describe(stage, facts[top], [facts[i] for i in alive if i not in keep], said))
            alive = keep
            if len(alive) == 1:
                break
        if not order:
            why = "; then ".join(reasons) if reasons else "all equal: first in path order"
            if len(left) == 1:
                why = "the only copy"
        order.append(alive[0])
        left.remove(alive[0])
    return order, why
