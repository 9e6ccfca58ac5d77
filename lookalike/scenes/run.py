"""What ``lookalike scene`` does: read the photo and its boxes, analyse, write the overlay."""

from __future__ import annotations

import os

from lookalike.scenes.analyse import Scene, analyse_scene
from lookalike.scenes.detections import DEFAULT_GAP, DEFAULT_MIN_SIZE, Box, load_detections
from lookalike.scenes.draw import draw_scene


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
