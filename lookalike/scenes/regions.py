"""Where each product congregates: a cluster's boxes joined into regions by morphological closing of its box mask."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lookalike.scenes.detections import DEFAULT_GAP, MASK_SIDE


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


@dataclass
class _Grid:
    """The boxes on the region mask: cells (x1, y1, x2, y2) and centres in mask pixels, the closing element."""

    scale: float
    height: int
    width: int
    cells: np.ndarray
    centres: np.ndarray
    ey: int
    ex: int

    def paint(self, indices: np.ndarray) -> np.ndarray:
        mask = np.zeros((self.height, self.width), dtype=bool)
        for i in indices:
            x1, y1, x2, y2 = self.cells[i]
            mask[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)] = True
        return mask


def _grid(xyxy: np.ndarray, width: int, height: int, gap: float, mask_side: int) -> _Grid:
    scale = min(1.0, mask_side / max(width, height))
    mh, mw = max(1, math.ceil(height * scale)), max(1, math.ceil(width * scale))
    med_w = float(np.median(xyxy[:, 2] - xyxy[:, 0]))
    med_h = float(np.median(xyxy[:, 3] - xyxy[:, 1]))
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
    ey, ex = max(1, round(gap * med_h * scale)), max(1, round(gap * med_w * scale))
    return _Grid(scale, mh, mw, cells, centres, ey, ex)


def _closed_mask(grid: _Grid, labels: np.ndarray, c: int) -> np.ndarray:
    """Cluster ``c``'s box mask after closing, with other clusters' boxes carved back out."""
    members = np.flatnonzero(labels == c)
    mask = grid.paint(members)
    others = grid.paint(np.flatnonzero(labels != c))
    pad = max(grid.ey, grid.ex)
    # A closing by a rectangle never leaves the bounding box of what it closes: work inside it (plus padding, so
    # boxes at the image border are not eroded) instead of over the whole photo.
    cells = grid.cells[members]
    ys = slice(cells[:, 1].min(), cells[:, 3].max())
    xs = slice(cells[:, 0].min(), cells[:, 2].max())
    closed = np.zeros_like(mask)
    closed[ys, xs] = separable_closing(np.pad(mask[ys, xs], pad), grid.ey, grid.ex)[pad:-pad, pad:-pad]
    # Closing may bridge over a narrow box of another product; that spot is not this product's, so carve it out.
    return mask | (closed & ~others)


def _to_pixels(ring: np.ndarray, ox: int, oy: int, scale: float, width: int, height: int) -> list[list[int]]:
    pts = (ring + np.array([ox + 0.5, oy + 0.5])) / scale
    pts[:, 0] = np.clip(pts[:, 0], 0, width)
    pts[:, 1] = np.clip(pts[:, 1], 0, height)
    pts = np.round(pts).astype(np.int64)
    keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)  # rounding merges the cut corners
    return _simplify(pts[keep] if keep.sum() >= 3 else pts).tolist()


def _component_region(
    comp: np.ndarray, sl: tuple[slice, slice], k: int, c: int, inside: list[str], grid: _Grid, size: tuple[int, int]
) -> Region:
    width, height = size
    scale = grid.scale
    rings = _rings(comp[sl] == k)
    oy, ox = sl[0].start, sl[1].start
    bbox = [
        round(sl[1].start / scale),
        round(sl[0].start / scale),
        min(width, round(sl[1].stop / scale)),
        min(height, round(sl[0].stop / scale)),
    ]
    return Region(
        cluster=c,
        index=0,
        bbox=bbox,
        boxes=inside,
        area=round(float((comp[sl] == k).sum()) / scale**2),
        polygon=_to_pixels(rings[0], ox, oy, scale, width, height) if rings else [],
        holes=[_to_pixels(r, ox, oy, scale, width, height) for r in rings[1:]],
    )


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
    regions: dict[int, list[Region]] = {}
    maps = RegionMaps(min(1.0, mask_side / max(width, height)), {})
    if len(xyxy) == 0:
        return regions, maps
    grid = _grid(xyxy, width, height, gap, mask_side)
    for c in sorted(int(v) for v in set(labels.tolist()) if v >= 0):
        members = np.flatnonzero(labels == c)
        comp, n = ndimage.label(_closed_mask(grid, labels, c), structure=np.ones((3, 3), dtype=bool))
        maps.labels[c] = comp
        found = ndimage.find_objects(comp)
        out = []
        for k in range(1, n + 1):
            inside = [ids[i] for i in members if comp[grid.centres[i, 1], grid.centres[i, 0]] == k]
            out.append(_component_region(comp, found[k - 1], k, c, inside, grid, (width, height)))
        out.sort(key=lambda r: (-len(r.boxes), r.bbox[1], r.bbox[0]))
        for j, r in enumerate(out):
            r.index = j
        regions[c] = out
    return regions, maps
