"""Sample photos for the demo and the tests, made from real photos that lookalike's dependencies ship.

scikit-learn ships two photos (a Chinese temple, a flower) and matplotlib one (Grace Hopper) plus a product shot;
each becomes a "class" of varied crops, flips, rotations and colour shifts. Retrieval on these is a fair smoke test:
a crop of the temple must find other temple crops, not the flower.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps


def source_photos() -> dict[str, Path]:
    import matplotlib
    import sklearn

    sk = Path(sklearn.__file__).parent / "datasets" / "images"
    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    found = {
        "temple": sk / "china.jpg",
        "flower": sk / "flower.jpg",
        "portrait": mpl / "grace_hopper.jpg",
        "package": mpl / "Minduka_Present_Blue_Pack.png",
    }
    return {k: v for k, v in found.items() if v.is_file()}


def _variant(img: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    w, h = img.size
    frac = rng.uniform(0.55, 0.95)
    cw, ch = int(w * frac), int(h * frac * rng.uniform(0.85, 1.15))
    ch = min(ch, h)
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    out = img.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    out = out.rotate(
        float(rng.uniform(-8, 8)), resample=Image.Resampling.BILINEAR, expand=False, fillcolor=(127, 127, 127)
    )
    out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.8, 1.2)))
    out = ImageEnhance.Color(out).enhance(float(rng.uniform(0.7, 1.3)))
    out.thumbnail((size, size))
    return out


def make_samples(out_dir: str | os.PathLike[str], per_class: int = 8, size: int = 320, seed: int = 0) -> Path:
    """Write ``out_dir/<class>/<class>_NN.jpg`` (and one held-out query per class in ``out_dir/../queries``)."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    queries = out.parent / f"{out.name}-queries"
    for name, src in source_photos().items():
        img = Image.open(src).convert("RGB")
        (out / name).mkdir(parents=True, exist_ok=True)
        queries.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _variant(img, rng, size).save(out / name / f"{name}_{i:02d}.jpg", quality=90)
        _variant(img, rng, size).save(queries / f"{name}.jpg", quality=90)
    return out


@dataclass
class DemoRun:
    photos: Path
    index: Any  # lookalike.Index
    results: list
    grid: Path


def run_demo(
    photos: str | os.PathLike[str] | None, work: str | os.PathLike[str], k: int = 5, progress: bool = False
) -> DemoRun:
    """Index the sample photos (or a user's folder), search with a few queries and draw the result grid.

    Each photo folder gets its own index under ``work`` (named after the folder and a hash of its path), so running
    the demo on another folder never collides with the index of the last one.
    """
    import hashlib

    from lookalike.images import find_images
    from lookalike.index import Index
    from lookalike.plots import result_grid

    work = Path(work)
    if photos is None:
        root = make_samples(work / "samples")
        queries = sorted((work / "samples-queries").glob("*.jpg"))
        index_dir = work / "index"
    else:
        root = Path(photos)
        found = find_images(root)
        queries = found[:: max(1, len(found) // 3)][:3]
        digest = hashlib.blake2b(str(root.resolve()).encode(), digest_size=4).hexdigest()
        index_dir = work / f"index-{root.resolve().name}-{digest}"
    index = Index.build(root, index_dir, progress=progress)
    results = index.search_many([str(q) for q in queries], k)
    return DemoRun(root, index, results, result_grid(results, work / "results.png"))


def perspective_view(
    img: Image.Image, rng: np.random.Generator, size: int = 400, strength: float = 0.12
) -> Image.Image:
    """The picture as seen by another camera: each corner moved by up to ``strength`` of the side (a homography, the
    view change of a flat façade), then scaled to ``size`` on the long side."""
    import cv2

    w, h = img.size
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = src + rng.uniform(-strength, strength, (4, 2)).astype(np.float32) * np.float32([w, h])
    dst -= dst.min(axis=0)
    out_w, out_h = (int(v) for v in np.ceil(dst.max(axis=0)))
    warped = cv2.warpPerspective(
        np.asarray(img.convert("RGB")),
        cv2.getPerspectiveTransform(src, dst),
        (out_w, out_h),
        borderValue=(127, 127, 127),
    )
    view = Image.fromarray(warped)
    view.thumbnail((size, size))
    return view


def make_views(out_dir: str | os.PathLike[str], per_source: int = 4, size: int = 400, seed: int = 0) -> Path:
    """``out_dir/<source>/<source>_NN.jpg``: several perspective views of each sample photo, the test bed for
    geometric verification (views of one photo share hundreds of verified keypoints, of two photos none)."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    for name, src in source_photos().items():
        img = Image.open(src).convert("RGB")
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_source):
            perspective_view(img, rng, size).save(out / name / f"{name}_{i:02d}.jpg", quality=90)
    return out
