"""Packed scenes: which detected objects on a shelf photo are the same product, and where each product congregates.

Seed packed-scenes: every detected box is cropped and embedded, the crops are clustered by cosine similarity without
knowing how many products there are (HDBSCAN, then a second pass with minimum size 2 that rescues small groups), and
each cluster's boxes are joined into regions by morphological closing of the cluster's box mask. The closing element
is a fraction (``gap``) of the median box size, so neighbours a shelf edge or a price tag apart join while a block of
another product (a whole box wide) keeps two regions of one product apart.

Detections come in three layouts (see :func:`parse_detections`); geometric problems in single boxes are repaired or
the box is skipped and reported, while a file that is not detections at all is refused with a one-line error.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.errors import LookalikeError

FORMATS = ("auto", "dict", "xyxy", "coco")
MIN_BOX_SIDE = 2
"""Boxes thinner than this (after clipping to the image) hold no product to embed; they are skipped and reported."""
MASK_SIDE = 1024
"""Regions are computed on a mask at most this many pixels on its long side: plenty for shelf-scale outlines, and
closing a full 12-Mpx mask would cost seconds for no visible difference."""
DEFAULT_MIN_SIZE = 3
DEFAULT_GAP = 0.5


# --- detections ---------------------------------------------------------------------------------------------------


@dataclass
class Box:
    """One detection as read from the file: ``number`` is its 1-based position, drawn on the overlay."""

    id: str
    number: int
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def xyxy(self) -> list[int]:
        return [round(self.x1), round(self.y1), round(self.x2), round(self.y2)]


def _numbers(values: Sequence[Any], where: str) -> list[float]:
    if not isinstance(values, list | tuple) or len(values) != 4:
        raise LookalikeError(f"detections: {where} should be 4 numbers, got {json.dumps(values)[:60]}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise LookalikeError(f"detections: {where} has a coordinate that is not a finite number: {v!r}")
        out.append(float(v))
    return out


def _corner_dict(value: Any, where: str) -> list[float]:
    if not isinstance(value, dict):
        raise LookalikeError(f"detections: {where} should be an object with x1, y1, x2, y2")
    missing = [k for k in ("x1", "y1", "x2", "y2") if k not in value]
    if missing:
        raise LookalikeError(f"detections: {where} lacks {', '.join(missing)} (expected x1, y1, x2, y2 in pixels)")
    return _numbers([value["x1"], value["y1"], value["x2"], value["y2"]], where)


def _coco_entry(value: Any, where: str) -> list[float]:
    if isinstance(value, dict):
        if "bbox" not in value:
            raise LookalikeError(f"detections: {where} has no 'bbox' (COCO annotations are {{'bbox': [x, y, w, h]}})")
        value = value["bbox"]
    x, y, w, h = _numbers(value, where)
    return [x, y, x + w, y + h]


def _looks_like_coco(rows: list[list[float]]) -> bool:
    """Corner boxes have x2 > x1 and y2 > y1; [x, y, w, h] rows away from the top-left corner mostly do not."""
    bad = sum(1 for x1, y1, x2, y2 in rows if x2 <= x1 or y2 <= y1)
    return bad > len(rows) / 2


def parse_detections(data: Any, fmt: str = "auto") -> list[Box]:
    """Boxes from parsed JSON, in the file's order.

    - ``dict``: ``{id: {"x1", "y1", "x2", "y2"}}`` (the shelf.json layout), or a list of such objects (an ``id``
      key, when present, names the box);
    - ``xyxy``: a list of ``[x1, y1, x2, y2]``, or ``{id: [x1, y1, x2, y2]}``;
    - ``coco``: a list of ``[x, y, w, h]`` or of ``{"bbox": [x, y, w, h], "id": ...}``, or a COCO file with
      ``"annotations"``;
    - ``auto`` tells these apart, except that a bare list of 4 numbers is read as corners; when most of such rows
      have x2 ≤ x1 or y2 ≤ y1 they are almost surely COCO, and the user is asked to say which.
    """
    if fmt not in FORMATS:
        raise LookalikeError(f"unknown detections format {fmt!r}; use one of: {', '.join(FORMATS)}")
    if isinstance(data, dict) and "annotations" in data:
        if fmt not in ("auto", "coco"):
            raise LookalikeError(
                f"detections: this is a COCO file (it has 'annotations'); use --format coco, not {fmt}"
            )
        data, fmt = data["annotations"], "coco"
        if not isinstance(data, list):
            raise LookalikeError("detections: 'annotations' should be a list")
    if isinstance(data, dict):
        items = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, list):
        items = []
        for i, v in enumerate(data):
            key = v.get("id", i) if isinstance(v, dict) else i
            items.append((str(key), v))
    else:
        raise LookalikeError(
            "detections: expected a JSON object {id: {x1, y1, x2, y2}} or a list of boxes, "
            f"got {type(data).__name__}"
        )
    if not items:
        return []
    first = items[0][1]
    if fmt == "auto":
        if isinstance(first, dict):
            fmt = "coco" if "bbox" in first else "dict"
        else:
            fmt = "xyxy"
            rows = [_numbers(v, f"box {k!r}") for k, v in items]
            if _looks_like_coco(rows):
                raise LookalikeError(
                    "detections: most boxes have x2 ≤ x1 or y2 ≤ y1, so they look like COCO [x, y, w, h]; "
                    "pass --format coco (or --format xyxy to read them as corners anyway)"
                )
    boxes = []
    for n, (key, value) in enumerate(items, start=1):
        where = f"box {key!r}"
        if fmt == "dict":
            if isinstance(value, list):
                raise LookalikeError(f"detections: {where} is a list; use --format xyxy or --format coco")
            coords = _corner_dict(value, where)
        elif fmt == "xyxy":
            if isinstance(value, dict):
                coords = _corner_dict(value, where) if "x1" in value else _numbers(value.get("bbox"), where)
            else:
                coords = _numbers(value, where)
        else:
            coords = _coco_entry(value, where)
        boxes.append(Box(key, n, *coords))
    ids = [b.id for b in boxes]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise LookalikeError(f"detections: box id {dup!r} appears more than once; ids must be unique")
    return boxes


def load_detections(path: str | os.PathLike[str], fmt: str = "auto") -> list[Box]:
    """Read and parse a detections file; any problem with the file is a one-line :class:`LookalikeError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LookalikeError(f"detections file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LookalikeError(f"cannot read detections file {path}: {exc}") from None
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LookalikeError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    try:
        return parse_detections(data, fmt)
    except LookalikeError as exc:
        raise LookalikeError(f"{path}: {exc}") from None


@dataclass
class Checked:
    """Boxes ready to crop, plus what was repaired or refused and why (both end up in the report)."""

    boxes: list[Box]
    skipped: list[dict[str, str]] = field(default_factory=list)
    adjusted: list[dict[str, str]] = field(default_factory=list)


def check_boxes(boxes: Sequence[Box], width: int, height: int) -> Checked:
    """Repair what is unambiguous, skip what cannot be cropped.

    Reversed corners (x2 < x1 or y2 < y1) are swapped: a box given as two corners in the other order is still the
    same rectangle, and refusing a whole shelf for it helps nobody. Boxes reaching past the image are clipped to it;
    a box with nothing left inside the image, or thinner than :data:`MIN_BOX_SIDE`, is skipped.
    """
    out = Checked([])
    for b in boxes:
        x1, y1, x2, y2 = b.x1, b.y1, b.x2, b.y2
        notes = []
        if x2 < x1 or y2 < y1:
            x1, x2 = min(x1, x2), max(x1, x2)
            y1, y2 = min(y1, y2), max(y1, y2)
            notes.append("corners in reverse order: swapped")
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
        if (cx2 - cx1) <= 0 or (cy2 - cy1) <= 0:
            reason = "outside the image" if (x2 - x1) > 0 and (y2 - y1) > 0 else "empty box (zero width or height)"
            out.skipped.append({"id": b.id, "reason": f"{reason} ({width}×{height} px)"})
            continue
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            notes.append(f"clipped to the image ({width}×{height} px)")
        if round(cx2) - round(cx1) < MIN_BOX_SIDE or round(cy2) - round(cy1) < MIN_BOX_SIDE:
            out.skipped.append({"id": b.id, "reason": f"too small to crop (under {MIN_BOX_SIDE} px)"})
            continue
        if notes:
            out.adjusted.append({"id": b.id, "note": "; ".join(notes)})
        out.boxes.append(Box(b.id, b.number, cx1, cy1, cx2, cy2))
    return out


# --- regions ------------------------------------------------------------------------------------------------------


@dataclass
class Region:
    """A connected block of one cluster's boxes after closing; coordinates in the original image's pixels."""

    cluster: int
    index: int
    bbox: list[int]
    boxes: list[str]
    area: int
    polygon: list[list[int]]
    holes: list[list[list[int]]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": f"{self.cluster}.{self.index}",
            "bbox": self.bbox,
            "boxes": self.boxes,
            "area": self.area,
            "polygon": self.polygon,
            "holes": self.holes,
        }


def _simplify(ring: np.ndarray) -> np.ndarray:
    """Drop points on straight runs: a contour of a mask has one point per pixel edge, most of them collinear."""
    if len(ring) > 1 and np.allclose(ring[0], ring[-1]):
        ring = ring[:-1]
    if len(ring) < 4:
        return ring
    prev, nxt = np.roll(ring, 1, axis=0), np.roll(ring, -1, axis=0)
    cross = (ring[:, 0] - prev[:, 0]) * (nxt[:, 1] - ring[:, 1]) - (ring[:, 1] - prev[:, 1]) * (nxt[:, 0] - ring[:, 0])
    keep = np.abs(cross) > 1e-9
    return ring[keep] if keep.sum() >= 3 else ring


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _rings(component: np.ndarray) -> list[np.ndarray]:
    """Outline(s) of one component as (x, y) rings in mask pixels; the outer boundary first, then any holes."""
    import contourpy  # ships with matplotlib

    padded = np.pad(component.astype(np.float64), 1)
    lines = contourpy.contour_generator(z=padded, line_type="Separate").lines(0.5)
    rings = [_simplify(np.asarray(line) - 1.0) for line in lines if len(line) >= 3]
    rings.sort(key=lambda r: -abs(_ring_area(r)))
    return rings


def separable_closing(mask: np.ndarray, ey: int, ex: int) -> np.ndarray:
    """Binary closing by an ``ey``×``ex`` rectangle, done as 1-D passes.

    A rectangle is the Minkowski sum of a row and a column, so dilating (and eroding) by each in turn gives exactly
    ``ndimage.binary_closing(mask, np.ones((ey, ex)))`` (the tests check this) at O(ey + ex) instead of O(ey · ex)
    per pixel: 0.2 s instead of 3 s per cluster on a shelf photo.
    """
    from scipy import ndimage

    row, col = np.ones((1, ex), dtype=bool), np.ones((ey, 1), dtype=bool)
    grown = ndimage.binary_dilation(ndimage.binary_dilation(mask, structure=row), structure=col)
    return ndimage.binary_erosion(ndimage.binary_erosion(grown, structure=row), structure=col)


@dataclass
class RegionMaps:
    """Per-cluster component labels at mask scale, kept for drawing the translucent fills."""

    scale: float
    labels: dict[int, np.ndarray]


def box_regions(
    xyxy: np.ndarray,
    labels: np.ndarray,
    ids: Sequence[str],
    width: int,
    height: int,
    *,
    gap: float = DEFAULT_GAP,
    mask_side: int = MASK_SIDE,
) -> tuple[dict[int, list[Region]], RegionMaps]:
    """Join each cluster's boxes into regions: close the cluster's box mask, then take connected components.

    The closing element is ``gap`` × the median box height by ``gap`` × the median box width (of all boxes, so one
    cluster of unusual boxes does not get its own yardstick): it bridges gaps narrower than that, e.g. the space
    between two bottles or a shelf edge, but not a whole box of another product. Where the closing still bridges
    over another cluster's (or a noise) box, that box's pixels are carved back out: a region is where this product
    stands, never where another one does. The mask is padded by the element size before closing so that boxes
    touching the image border are not eroded away.
    """
    from scipy import ndimage

    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    scale = min(1.0, mask_side / max(width, height))
    mh, mw = max(1, math.ceil(height * scale)), max(1, math.ceil(width * scale))
    regions: dict[int, list[Region]] = {}
    maps = RegionMaps(scale, {})
    if len(xyxy) == 0:
        return regions, maps
    med_w = float(np.median(xyxy[:, 2] - xyxy[:, 0]))
    med_h = float(np.median(xyxy[:, 3] - xyxy[:, 1]))
    ey = max(1, round(gap * med_h * scale))
    ex = max(1, round(gap * med_w * scale))
    cells = np.stack(
        [
            np.floor(xyxy[:, 0] * scale),
            np.floor(xyxy[:, 1] * scale),
            np.ceil(xyxy[:, 2] * scale),
            np.ceil(xyxy[:, 3] * scale),
        ],
        axis=1,
    ).astype(np.int64)
    cells[:, [0, 2]] = np.clip(cells[:, [0, 2]], 0, mw)
    cells[:, [1, 3]] = np.clip(cells[:, [1, 3]], 0, mh)
    centres = np.stack(
        [
            np.clip(((xyxy[:, 0] + xyxy[:, 2]) / 2 * scale).astype(np.int64), 0, mw - 1),
            np.clip(((xyxy[:, 1] + xyxy[:, 3]) / 2 * scale).astype(np.int64), 0, mh - 1),
        ],
        axis=1,
    )

    def paint(indices: np.ndarray) -> np.ndarray:
        mask = np.zeros((mh, mw), dtype=bool)
        for i in indices:
            x1, y1, x2, y2 = cells[i]
            mask[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)] = True
        return mask

    pad = max(ey, ex)
    for c in sorted(int(v) for v in set(labels.tolist()) if v >= 0):
        members = np.flatnonzero(labels == c)
        mask = paint(members)
        others = paint(np.flatnonzero(labels != c))
        # A closing by a rectangle never leaves the bounding box of what it closes: work inside it (plus padding,
        # so boxes at the image border are not eroded) instead of over the whole photo.
        ys, xs = (
            slice(cells[members, 1].min(), cells[members, 3].max()),
            slice(cells[members, 0].min(), cells[members, 2].max()),
        )
        closed = np.zeros_like(mask)
        closed[ys, xs] = separable_closing(np.pad(mask[ys, xs], pad), ey, ex)[pad:-pad, pad:-pad]
        # Closing may bridge over a narrow box of another product; that spot is not this product's, so carve it out.
        closed = mask | (closed & ~others)
        comp, n = ndimage.label(closed, structure=np.ones((3, 3), dtype=bool))
        maps.labels[c] = comp
        found = ndimage.find_objects(comp)
        out = []
        for k in range(1, n + 1):
            sl = found[k - 1]
            inside = [ids[i] for i in members if comp[centres[i, 1], centres[i, 0]] == k]
            rings = _rings(comp[sl] == k)
            oy, ox = sl[0].start, sl[1].start

            def to_px(ring: np.ndarray, ox: int = ox, oy: int = oy) -> list[list[int]]:
                pts = (ring + np.array([ox + 0.5, oy + 0.5])) / scale
                pts[:, 0] = np.clip(pts[:, 0], 0, width)
                pts[:, 1] = np.clip(pts[:, 1], 0, height)
                pts = np.round(pts).astype(np.int64)
                keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)  # rounding merges the cut corners
                return _simplify(pts[keep] if keep.sum() >= 3 else pts).tolist()

            bbox = [
                round(sl[1].start / scale),
                round(sl[0].start / scale),
                min(width, round(sl[1].stop / scale)),
                min(height, round(sl[0].stop / scale)),
            ]
            out.append(
                Region(
                    cluster=c,
                    index=0,
                    bbox=bbox,
                    boxes=inside,
                    area=round(float((comp[sl] == k).sum()) / scale**2),
                    polygon=to_px(rings[0]) if rings else [],
                    holes=[to_px(r) for r in rings[1:]],
                )
            )
        out.sort(key=lambda r: (-len(r.boxes), r.bbox[1], r.bbox[0]))
        for j, r in enumerate(out):
            r.index = j
        regions[c] = out
    return regions, maps


# --- the scene ----------------------------------------------------------------------------------------------------


@dataclass
class Cluster:
    id: int
    boxes: list[str]
    regions: list[Region]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "size": len(self.boxes),
            "boxes": self.boxes,
            "regions": [r.to_dict() for r in self.regions],
        }


@dataclass
class Scene:
    """Everything ``lookalike scene`` reports; ``to_dict`` is its ``--json``."""

    image: str
    width: int
    height: int
    boxes: list[Box]
    labels: np.ndarray
    clusters: list[Cluster]
    noise: list[str]
    skipped: list[dict[str, str]]
    adjusted: list[dict[str, str]]
    settings: dict[str, Any]
    maps: RegionMaps | None = None
    overlay: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "settings": self.settings,
            "boxes": [
                {"id": b.id, "number": b.number, "box": b.xyxy, "cluster": int(c)}
                for b, c in zip(self.boxes, self.labels, strict=True)
            ],
            "clusters": [c.to_dict() for c in self.clusters],
            "noise": self.noise,
            "skipped": self.skipped,
            "adjusted": self.adjusted,
            "notes": self.notes,
            "overlay": self.overlay,
        }


def crops(image: Image.Image, boxes: Sequence[Box]) -> list[Image.Image]:
    return [image.crop(tuple(b.xyxy)) for b in boxes]


def scene_describer(model: str | None = None, resolution: int | None = None, pooling: str | None = None):  # noqa: ANN201
    """The describer for crops: GeM over the default backbone, or a model folder from ``lookalike train`` (whose
    projection head advertises mean pooling: GeM would clip its negative components)."""
    from lookalike.config import DEFAULT_MODEL, IndexConfig
    from lookalike.embed import Describer

    # fp32: the crops of one shelf photo take well under a second either way, and the scene figures (BENCHMARKS.md
    # "scenes") and tests were measured at fp32, where int8 moved a borderline pair of facings into a cluster
    config = IndexConfig(
        model=str(model) if model else DEFAULT_MODEL, pooling=pooling, resolution=resolution, precision="fp32"
    )
    return Describer.from_config(config)


def describer_name(describer: Any) -> str:
    cfg = describer.model.config()
    return str(cfg.get("name", "?"))


def analyse_scene(
    image: Image.Image,
    boxes: Sequence[Box],
    *,
    describer: Any = None,
    model: str | None = None,
    resolution: int | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    gap: float = DEFAULT_GAP,
    image_name: str = "",
) -> Scene:
    """Crop, embed, cluster (HDBSCAN + second pass) and join each cluster's boxes into regions.

    ``describer`` (else one built from ``model``/``resolution``) is only loaded when there are two boxes to compare.
    """
    from lookalike.cluster import hdbscan_labels

    if min_size < 2:
        raise LookalikeError(f"--min-size must be at least 2 (a cluster of one is noise), got {min_size}")
    if not gap >= 0:
        raise LookalikeError(f"--gap must be a non-negative fraction of the median box size, got {gap}")
    image = image.convert("RGB")
    width, height = image.size
    checked = check_boxes(boxes, width, height)
    good = checked.boxes
    notes = []
    if len(good) >= 2:
        if describer is None:
            describer = scene_describer(model, resolution)
        vectors = describer.describe_images(crops(image, good))
        labels = hdbscan_labels(vectors, min_size)
    else:
        labels = np.full(len(good), -1, dtype=np.int64)
        notes.append(
            "no boxes to cluster" if not good else "only one usable box: nothing to compare it with, reported as noise"
        )
    # Number clusters by size (largest first), then by position, so the legend reads in a stable order.
    found = [int(c) for c in set(labels.tolist()) if c >= 0]
    xyxy = np.array([[b.x1, b.y1, b.x2, b.y2] for b in good], dtype=np.float64).reshape(-1, 4)

    def order(c: int) -> tuple[int, float, float]:
        m = labels == c
        return (-int(m.sum()), float(xyxy[m, 1].min()), float(xyxy[m, 0].min()))

    remap = {c: i for i, c in enumerate(sorted(found, key=order))}
    labels = np.array([remap.get(int(c), -1) for c in labels], dtype=np.int64)
    ids = [b.id for b in good]
    regions, maps = box_regions(xyxy, labels, ids, width, height, gap=gap)
    clusters = [
        Cluster(c, [ids[i] for i in np.flatnonzero(labels == c)], regions.get(c, [])) for c in range(len(remap))
    ]
    if len(good) >= 2 and not clusters:
        notes.append("no two boxes were similar enough to group; try a smaller --min-size or another --model")
    return Scene(
        image=image_name,
        width=width,
        height=height,
        boxes=list(good),
        labels=labels,
        clusters=clusters,
        noise=[ids[i] for i in np.flatnonzero(labels < 0)],
        skipped=checked.skipped,
        adjusted=checked.adjusted,
        settings={
            "model": describer_name(describer) if describer is not None else str(model or "efficientnet-lite0"),
            "pooling": describer.pooling.config()["name"] if describer is not None else None,
            "resolution": describer.resolution if describer is not None else resolution,
            "min_size": min_size,
            "gap": gap,
        },
        maps=maps,
        notes=notes,
    )


# --- drawing ------------------------------------------------------------------------------------------------------


NOISE_COLOUR = (0.62, 0.62, 0.62)


def cluster_colours(n: int) -> list[tuple[float, float, float]]:
    """Distinct colours: tab10 then tab20's lighter shades, then evenly spaced hues for very many clusters."""
    import matplotlib

    base = list(matplotlib.colormaps["tab10"].colors)
    base = [c for i, c in enumerate(base) if i != 7]  # tab10's grey is the noise colour
    base += [c for i, c in enumerate(matplotlib.colormaps["tab20"].colors) if i % 2 == 1 and i != 15]
    if n <= len(base):
        return [tuple(c) for c in base[:n]]
    hsv = matplotlib.colormaps["hsv"]
    return [tuple(c) for c in base] + [tuple(hsv(i / (n - len(base)))[:3]) for i in range(n - len(base))]


def draw_scene(
    scene: Scene,
    image: Image.Image,
    out: str | os.PathLike[str],
    *,
    max_side: int = 1600,
) -> Path:
    """Overlay PNG: each cluster's regions filled translucent and outlined in its colour, its boxes numbered;
    noise boxes dashed grey; a legend with each cluster's size and region count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Polygon, Rectangle

    width, height = scene.width, scene.height
    shown = image.convert("RGB")
    scale = min(1.0, max_side / max(width, height))
    if scale < 1:
        shown = shown.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS)
    dpi = 100
    img_w_in, img_h_in = shown.width / dpi, shown.height / dpi
    legend_in = max(2.4, 0.18 * img_w_in)
    fig = plt.figure(figsize=(img_w_in + legend_in, img_h_in), dpi=dpi)
    ax = fig.add_axes((0, 0, img_w_in / (img_w_in + legend_in), 1))
    ax.imshow(np.asarray(shown), extent=(0, width, height, 0), interpolation="bilinear")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    colours = cluster_colours(len(scene.clusters))
    font = max(6.0, min(11.0, 0.012 * shown.height))
    if scene.maps is not None:
        for c, comp in scene.maps.labels.items():
            fill = np.zeros((*comp.shape, 4), dtype=np.float32)
            fill[comp > 0, :3] = colours[c]
            fill[comp > 0, 3] = 0.28
            ax.imshow(fill, extent=(0, width, height, 0), interpolation="nearest")
    for cl in scene.clusters:
        for r in cl.regions:
            for ring in [r.polygon, *r.holes]:
                if len(ring) >= 3:
                    ax.add_patch(Polygon(ring, closed=True, fill=False, edgecolor=colours[cl.id], linewidth=2.2))
    for b, c in zip(scene.boxes, scene.labels, strict=True):
        colour = colours[c] if c >= 0 else NOISE_COLOUR
        x1, y1, x2, y2 = b.x1, b.y1, b.x2, b.y2
        ax.add_patch(
            Rectangle(
                (x1, y1),
                x2 - x1,
                y2 - y1,
                fill=False,
                edgecolor=colour,
                linewidth=1.0 if c >= 0 else 1.2,
                linestyle="-" if c >= 0 else "--",
            )
        )
        ax.text(
            x1 + 0.02 * (x2 - x1),
            y1 + 0.02 * (y2 - y1),
            str(b.number),
            color="white",
            fontsize=font,
            fontweight="bold",
            va="top",
            ha="left",
            bbox={"boxstyle": "square,pad=0.15", "facecolor": colour, "edgecolor": "none", "alpha": 0.9},
        )
    handles: list[Any] = [
        Patch(
            facecolor=(*colours[cl.id], 0.45),
            edgecolor=colours[cl.id],
            linewidth=2,
            label=f"cluster {cl.id + 1}: {len(cl.boxes)} boxes, {len(cl.regions)} region{'s' * (len(cl.regions) != 1)}",
        )
        for cl in scene.clusters
    ]
    if scene.noise:
        handles.append(
            Line2D([], [], color=NOISE_COLOUR, linestyle="--", linewidth=1.5, label=f"noise: {len(scene.noise)} boxes")
        )
    if not handles:
        handles.append(Line2D([], [], color="none", label="no boxes"))
    title = f"{len(scene.clusters)} clusters of {len(scene.boxes)} boxes"
    if scene.skipped:
        title += f"\n{len(scene.skipped)} skipped"
    fig.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(img_w_in / (img_w_in + legend_in) + 0.01, 0.99),
        fontsize=max(7.0, font * 0.9),
        title=title,
        title_fontsize=max(7.0, font),
        frameon=False,
        borderaxespad=0.0,
    )
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    except OSError as exc:
        raise LookalikeError(
            f"cannot write the overlay to {out}: {exc.strerror or exc}; choose another --out"
        ) from None
    finally:
        plt.close(fig)
    return out


def run_scene(
    image_path: str | os.PathLike[str],
    detections: str | os.PathLike[str],
    *,
    fmt: str = "auto",
    model: str | None = None,
    resolution: int | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    gap: float = DEFAULT_GAP,
    out: str | os.PathLike[str] | None = None,
    max_side: int = 1600,
) -> Scene:
    """What ``lookalike scene`` does: read the photo and the boxes, analyse, write the overlay (when ``out``)."""
    from lookalike.images import decode, read_file

    boxes = load_detections(detections, fmt)
    image, meta = decode(read_file(image_path), str(image_path))
    scale = image.width / meta.width
    if scale != 1:  # a JPEG over the full-decode pixel limit comes in draft mode; boxes are in full-size pixels
        boxes = [Box(b.id, b.number, b.x1 * scale, b.y1 * scale, b.x2 * scale, b.y2 * scale) for b in boxes]
    scene = analyse_scene(
        image,
        boxes,
        model=model,
        resolution=resolution,
        min_size=min_size,
        gap=gap,
        image_name=str(image_path),
    )
    if scale != 1:
        scene.notes.append(
            f"the {meta.width}×{meta.height} photo was decoded at 1/{round(1 / scale)} scale (over the full-decode "
            "pixel limit); box coordinates in this result are at that scale"
        )
    if out is not None:
        scene.overlay = str(draw_scene(scene, image, out, max_side=max_side))
    return scene
