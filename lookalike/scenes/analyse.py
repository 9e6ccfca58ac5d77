"""A shelf photo analysed: crops embedded, clustered without knowing how many products there are, regions joined."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from lookalike.errors import LookalikeError
from lookalike.scenes.detections import DEFAULT_GAP, DEFAULT_MIN_SIZE, Box, check_boxes
from lookalike.scenes.regions import Region, RegionMaps, box_regions


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
