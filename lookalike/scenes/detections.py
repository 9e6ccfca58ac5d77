"""Detections on a shelf photo: three file layouts read into boxes, geometric problems repaired or reported.

A box that cannot be used (too thin, outside the image) is skipped and reported; a file that is not detections at
all is refused with a one-line error.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookalike.errors import LookalikeError

FORMATS = ("auto", "dict", "xyxy", "coco")
MIN_BOX_SIDE = 2
"""Boxes thinner than this (after clipping to the image) hold no product to embed; they are skipped and reported."""
MASK_SIDE = 1024
"""Regions are computed on a mask at most this many pixels on its long side: plenty for shelf-scale outlines, and
closing a full 12-Mpx mask would cost seconds for no visible difference."""
DEFAULT_MIN_SIZE = 3
DEFAULT_GAP = 0.5


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
