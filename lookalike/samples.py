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


def _exif(when: str) -> bytes:
    """EXIF with a capture time (DateTimeOriginal) and a camera make, as a camera writes them."""
    exif = Image.Exif()
    exif[0x010F] = "SampleCam"
    exif.get_ifd(0x8769)[0x9003] = when
    return exif.tobytes()


def make_duplicates(out_dir: str | os.PathLike[str], size: int = 480) -> Path:
    """A folder with copies and a burst, for trying (and testing) ``lookalike dedupe``: each sample photo (``size``
    px, EXIF capture time and camera) with a half-size, a quality-40 and a blurred copy under ``copies/``, and
    ``burst/``: three frames of one moment (someone walking across the flower photo, 1 s apart; the middle one
    slightly out of focus), which look alike but are not copies. Returns the photo folder."""
    from PIL import ImageFilter

    out = Path(out_dir)
    made = sorted(make_samples(out.parent / f"{out.name}-sources", per_class=1, size=size).rglob("*.jpg"))
    (out / "copies").mkdir(parents=True, exist_ok=True)
    (out / "burst").mkdir(exist_ok=True)
    for n, src in enumerate(made):
        stem = src.parent.name
        img = Image.open(src).convert("RGB")
        img.save(out / f"{stem}.jpg", quality=95, exif=_exif(f"2024:05:0{n + 1} 10:00:00"))
        img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS).save(
            out / "copies" / f"{stem}_half.jpg"
        )
        img.save(out / "copies" / f"{stem}_q40.jpg", quality=40)
        img.filter(ImageFilter.GaussianBlur(2)).save(out / "copies" / f"{stem}_blur.jpg", quality=95)
        if stem == "flower" and len(made) > 2:
            walker = Image.open(made[2]).convert("RGB").resize((img.width * 2 // 5, img.height * 4 // 5))
            for f, x in enumerate((0.05, 0.3, 0.55)):
                frame = img.copy()
                frame.paste(walker, (int(img.width * x), img.height // 10))
                if f == 1:
                    frame = frame.filter(ImageFilter.GaussianBlur(0.8))
                frame.save(out / "burst" / f"frame{f}.jpg", quality=90, exif=_exif(f"2024:06:01 10:00:0{f + 1}"))
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
