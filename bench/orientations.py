"""Rotated and mirrored copies: recall and precision of ``dedupe --orientations`` against plain ``dedupe``, on
copies generated from flowers12 and rooms photos (turned 90°/180°/270°, mirrored, plus the crops and
recompressions bench.cluster uses), and what describing every image turned costs against describing it once.

Run from the project folder: ``flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.orientations``.
"""

from __future__ import annotations

import argparse
import io
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import CACHE, dataset
from bench.report import index_settings, markdown_table, write_section

COPIES = ("rot90", "rot180_q50", "rot270_half", "mirror", "mirror_crop90", "crop80", "q20")
"""What each source photo gets besides itself: the turned copies ``--orientations`` is for, and two of the upright
copies plain dedupe already finds (so a regression there shows too)."""


def _jpeg(im: Image.Image, q: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=q)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _copies(img: Image.Image, rng: np.random.Generator) -> dict[str, Image.Image]:
    T = Image.Transpose  # noqa: N806

    def crop(im: Image.Image, frac: float) -> Image.Image:
        cw, ch = int(im.width * frac), int(im.height * frac)
        x0, y0 = int(rng.integers(0, im.width - cw + 1)), int(rng.integers(0, im.height - ch + 1))
        return im.crop((x0, y0, x0 + cw, y0 + ch))

    turned = img.transpose(T.ROTATE_270)
    return {
        "orig": img,
        "rot90": img.transpose(T.ROTATE_90),
        "rot180_q50": _jpeg(img.transpose(T.ROTATE_180), 50),
        "rot270_half": turned.resize((turned.width // 2, turned.height // 2), Image.Resampling.LANCZOS),
        "mirror": img.transpose(T.FLIP_LEFT_RIGHT),
        "mirror_crop90": crop(img.transpose(T.FLIP_LEFT_RIGHT), 0.9),
        "crop80": crop(img, 0.8),
        "q20": _jpeg(img, 20),
    }


def make_set(flowers_per_class: int, rooms_per_class: int) -> Path:
    """Source photos (a random sample of flowers12 and rooms, seed 0), one folder each: the original and its copies."""
    out = CACHE / f"turned-copies-{flowers_per_class}-{rooms_per_class}"
    if (out / ".complete").exists():
        return out
    rng = np.random.default_rng(0)
    for name, per in (("flowers12", flowers_per_class), ("rooms", rooms_per_class)):
        for cls in sorted(p for p in dataset(name).iterdir() if p.is_dir()):
            files = sorted(cls.glob("*.jpg"))
            for src in [files[i] for i in sorted(rng.choice(len(files), min(per, len(files)), replace=False))]:
                group = out / f"{name}-{cls.name}_{src.stem}"
                group.mkdir(parents=True, exist_ok=True)
                for kind, im in _copies(Image.open(src).convert("RGB"), rng).items():
                    im.save(group / f"{kind}.jpg", quality=92)
    (out / ".complete").touch()
    return out


def scores(groups: list[dict], names: list[str]) -> dict[str, object]:
    """Pair precision and recall over pairs inside reported groups (truth: same source folder), and per copy kind
    the share of copies grouped with their original."""
    folder = {n: n.split("/")[0] for n in names}
    sizes: dict[str, int] = {}
    for n in names:
        sizes[folder[n]] = sizes.get(folder[n], 0) + 1
    positives = sum(c * (c - 1) // 2 for c in sizes.values())
    pairs = [(a, b) for g in groups for a, b in combinations(g["paths"], 2)]
    tp = sum(folder[a] == folder[b] for a, b in pairs)
    group_of = {p: i for i, g in enumerate(groups) for p in g["paths"]}
    out: dict[str, object] = {
        "precision": round(tp / max(1, len(pairs)), 3),
        "recall": round(tp / positives, 3),
        "groups": len(groups),
    }
    for kind in COPIES:
        hits = [
            f"{folder[n]}/orig.jpg" in group_of and group_of.get(n) == group_of[f"{folder[n]}/orig.jpg"]
            for n in names
            if n.endswith(f"/{kind}.jpg")
        ]
        out[kind] = round(float(np.mean(hits)), 3) if hits else "–"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--flowers", type=int, default=2, help="source photos per flower species (12 species)")
    ap.add_argument("--rooms", type=int, default=4, help="source photos per room type (5 types)")
    args = ap.parse_args()

    from lookalike.dedupe import near_duplicates
    from lookalike.dedupe.orientations import ORIENTATIONS, turn_image
    from lookalike.images import decode, read_file
    from lookalike.index import Index
    from lookalike.store import ORIENTATIONS_FILE

    root = make_set(args.flowers, args.rooms)
    path = CACHE / f"index-{root.name}"
    started = time.perf_counter()
    index = Index.build(root, path, labels="folders", progress=False)
    build_s = time.perf_counter() - started
    n, names = len(index), index.names
    sources = len({x.split("/")[0] for x in names})
    print(f"{n} images from {sources} source photos (index build {build_s:.1f} s)")

    # --- cost: the same decode + describe loop, upright only and with the four turns, side by side --------------
    describer = index.describer
    sample = index.paths[: min(n, 80)]

    def describe_loop(turns: bool) -> float:
        t0 = time.perf_counter()
        for s in range(0, len(sample), 8):
            images = []
            for p in sample[s : s + 8]:
                img = decode(read_file(p), str(p), target=describer.resolution)[0]
                images += [img] + ([turn_image(img, t) for t in range(len(ORIENTATIONS))] if turns else [])
            describer.describe_images(images)
        return time.perf_counter() - t0

    upright_s = describe_loop(False)
    all_s = describe_loop(True)
    (path / ORIENTATIONS_FILE).unlink(missing_ok=True)
    started = time.perf_counter()
    turned = index.orientation_vectors()
    turned_s = time.perf_counter() - started
    cached_started = time.perf_counter()
    index.orientation_vectors()
    cached_s = time.perf_counter() - cached_started
    print(f"describe {len(sample)} images: upright {upright_s:.1f} s, upright + 4 turns {all_s:.1f} s")

    # --- quality --------------------------------------------------------------------------------------------------
    cache = index.features
    cache.clear()
    rows = []
    for label, kwargs in (
        ("dedupe (default: upright only)", {}),
        ("--orientations, pixel check only", {"turned": turned}),
        ("--orientations, pixel check or homography (CLI default)", {"turned": turned, "features": cache}),
    ):
        notes: list[str] = []
        t0 = time.perf_counter()
        groups = near_duplicates(index.vectors, names, paths=index.paths, notes=notes, **kwargs)
        secs = time.perf_counter() - t0
        s = scores(groups, names)
        rows.append([label, s["groups"], s["precision"], s["recall"], *(s[k] for k in COPIES), f"{secs:.1f}"])
        print(rows[-1], notes, flush=True)
    quality = markdown_table(
        ["dedupe", "groups", "pair precision", "pair recall", *(f"{k} found" for k in COPIES), "seconds"], rows
    )
    body = f"""## Rotated and mirrored copies (`dedupe --orientations`)

{sources} source photos ({args.flowers} per flowers12 species, {args.rooms} per room type of `rooms/`, sampled with
seed 0), each with 7 copies: turned 90° (`rot90`), 180° and recompressed at JPEG quality 50, 270° at half size,
mirrored, mirrored and cropped to 90 %, and two upright copies plain `dedupe` already finds (an 80 % crop, JPEG
quality 20): {n} images. A pair inside a reported group is right when both come from one source photo; "found" is
the share of copies of that kind grouped with their original. Default settings (cosine ≥ 0.8, pixel ≥ 0.9, k 10;
a homography needs ≥ 40 inliers and ≥ 50 % of the tentative matches); seconds include reading thumbnails and, for
the homography, computing the local features of the images it checks (none were cached).

{quality}

**Cost of describing every image turned** (the same decode-and-describe loop over {len(sample)} of these images, run
one after the other): upright only {upright_s:.1f} s, upright plus the four turns {all_s:.1f} s —
**{all_s / upright_s:.1f}×** the model work of indexing (the turns alone {(all_s - upright_s) / upright_s:.1f}×). For
all {n} images `Index.orientation_vectors()` took {turned_s:.1f} s, against {build_s:.1f} s for building the
index in this run{" (which was already built: only checked)" if build_s < turned_s / 20 else ""}; the second call,
from `INDEX_DIR/orientations.npz`, {cached_s:.2f} s ({(path / ORIENTATIONS_FILE).stat().st_size / n / 1024:.1f} KiB
per image, float16).
"""
    settings = {
        **index_settings(index.store.meta),
        "data": f"{sources} flowers12 + rooms photos x 8 versions",
        "threshold": 0.8,
        "pixel": 0.9,
        "k": 10,
    }
    write_section("orientations", body, settings=settings)
    print(body)


if __name__ == "__main__":
    main()
