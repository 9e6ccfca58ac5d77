"""Issues 2 and 24 figures: end-to-end indexing throughput against the model alone and against a seed-style eager
loop, at int8 (the default) and fp32, and the cost of re-indexing an unchanged folder. All measured in one run, as
ratios.

For each precision the end-to-end run comes first, after dropping the page cache (``echo 1 >
/proc/sys/vm/drop_caches``, root only), so it pays for reading the photos from disk; the model-only step decodes every
file beforehand and would otherwise leave them all cached. A second end-to-end run over the then cached files shows
what the read costs. int8 indexes copy the machine's cached calibration (made before the timing: a machine pays it
once, BENCHMARKS.md "quantize"); one more int8 run calibrates on the photos (``--calibration photos``) to show that cost.

    flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.indexing [--limit N] [--precisions int8,fp32]

With ``--limit N`` the run writes its own section (``indexing-N``), beside the full collection's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import dataset
from bench.report import index_settings, markdown_table, write_section
from lookalike import Index
from lookalike.aggregate import make_pooling
from lookalike.config import RunOptions
from lookalike.embed import Describer
from lookalike.images import find_images, load_image
from lookalike.models import create_model

DEFAULT_BATCH = RunOptions().batch_size  # what `lookalike index` uses


def drop_page_cache() -> bool:
    """Write dirty pages and drop the clean page cache (needs root); False when not permitted."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        return False
    return True


def seed_style_loop(paths: list[Path], resolution: int) -> float:
    """What the seed notebooks did: one image at a time, PIL resize, eager torch, mean pooling. Returns images/s."""
    import torch

    model = create_model("efficientnet-lite0", runtime="torch")
    module = model.module
    torch.set_num_threads(2)
    start = time.perf_counter()
    with torch.inference_mode():
        for p in paths:
            img = load_image(p).resize((resolution, resolution))
            x = torch.from_numpy(np.asarray(img, dtype=np.float32)[None])
            feats = module(x)
            v = feats.mean(dim=(2, 3))
            _ = (v / v.norm()).numpy()
    return len(paths) / (time.perf_counter() - start)


def model_rate(d: Describer, pixels: np.ndarray, valid: np.ndarray) -> float:
    """Images/s of the model and pooling alone on pre-decoded tensors, at the batch `lookalike index` uses."""
    d.describe_arrays(pixels[:8], valid[:8])  # the first run allocates
    start = time.perf_counter()
    for i in range(0, len(pixels), DEFAULT_BATCH):
        d.describe_arrays(pixels[i : i + DEFAULT_BATCH], valid[i : i + DEFAULT_BATCH])
    return len(pixels) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images (0 = all)")
    ap.add_argument("--seed-images", type=int, default=300, help="images for the seed-style eager loop")
    ap.add_argument("--resolution", type=int, default=0, help="input size (0 = the model's default)")
    ap.add_argument("--precisions", default="int8,fp32", help="the first is the table's main rows")
    args = ap.parse_args()
    precisions = args.precisions.split(",")
    rooms = dataset("rooms")
    work = Path(tempfile.mkdtemp(prefix="lookalike-bench-"))
    try:
        src = rooms
        if args.limit:
            src = work / "photos"
            for p in find_images(rooms)[: args.limit]:
                dst = src / p.relative_to(rooms)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(p, dst)
        paths = find_images(src)
        n = len(paths)

        # warm the models (ONNX export and the samples calibration are cached; first session run allocates)
        describers = {}
        for precision in precisions:
            d = Describer(
                create_model("efficientnet-lite0", precision=precision), make_pooling("gem"), args.resolution or None
            )
            d.ensure_int8()
            d.describe_arrays(np.zeros((8, d.resolution, d.resolution, 3), np.uint8), np.full((8, 2), d.resolution))
            describers[precision] = d
        res = describers[precisions[0]].resolution
        pixels = valid = None
        rates: dict[str, dict[str, float]] = {}
        for precision, describer in describers.items():
            # 1. end to end, first thing to read the photos: discovery, read, hash, decode, letterbox, model, pooling,
            # Parquet, checkpoints
            cold = drop_page_cache()
            start = time.perf_counter()
            idx = Index.build(src, work / f"index-{precision}", pooling="gem", resolution=res, precision=precision)
            full_s = time.perf_counter() - start
            assert len(idx) == n, (len(idx), n)
            r = rates[precision] = {"e2e": n / full_s, "full_s": full_s}
            if precision == precisions[0]:
                main_idx = idx
                # 2. re-index unchanged
                start = time.perf_counter()
                again = Index.build(src, work / f"index-{precision}")
                r["reindex_s"] = time.perf_counter() - start
                assert again.report.embedded == 0
            if pixels is None:
                # 3. model alone on pre-decoded tensors (decoding reads every file: the page cache now holds them);
                # preparing an image does not depend on the precision, so every precision uses these tensors
                prepared = [describer.prepare_image(load_image(p, target=res)) for p in paths]
                pixels = np.stack([p for p, _ in prepared])
                valid = np.array([v for _, v in prepared])
                del prepared

            r["model"] = model_rate(describer, pixels, valid)
            # 3b. end to end again from scratch, the photos now in the page cache
            start = time.perf_counter()
            Index.build(src, work / f"index-{precision}-warm", pooling="gem", resolution=res, precision=precision)
            r["warm"] = n / (time.perf_counter() - start)
            if precision == "int8":  # 3c. calibrated on the photos themselves, as every such new index pays
                start = time.perf_counter()
                Index.build(src, work / "index-int8-photos", pooling="gem", resolution=res, calibration="photos")
                r["photos"] = n / (time.perf_counter() - start)

        # 4. seed-style per-image eager torch loop
        seed = seed_style_loop(paths[: args.seed_images], res)
        top = precisions[0]
        main = rates[top]
        end_to_end, full_s, reindex_s = main["e2e"], main["full_s"], main["reindex_s"]
        first = "page cache dropped first" if cold else "page cache not dropped (not permitted), run first"
        rows = []
        for precision, r in rates.items():
            rows += [
                [f"{precision}: model alone, pre-decoded tensors (ONNX Runtime, batch {DEFAULT_BATCH})",
                 f"{r['model']:.1f}", "1.00×", ""],
                [f"{precision}: `Index.build` end to end ({first})", f"{r['e2e']:.1f}", f"{r['e2e'] / r['model']:.2f}×",
                 "≥ 0.8× of model-only"],
                [f"{precision}: `Index.build` end to end, photos already in the page cache", f"{r['warm']:.1f}",
                 f"{r['warm'] / r['model']:.2f}×", ""],
            ]  # fmt: skip
            if "photos" in r:
                rows.append(["int8: `Index.build` end to end, `--calibration photos` (its 64-photo calibration "
                             "included), photos cached", f"{r['photos']:.1f}", f"{r['photos'] / r['model']:.2f}×", ""])  # fmt: skip
        rows.append([f"seed-style loop (per image, eager torch fp32; {min(n, args.seed_images)} images)", f"{seed:.1f}",
                     f"{seed / main['model']:.2f}× of {top}", ""])  # fmt: skip
        idx = main_idx
        settings = index_settings(idx.store.meta)
        read_note = (
            "The end-to-end row reads the photos from disk: the page cache was dropped just before it "
            "(`echo 1 > /proc/sys/vm/drop_caches`)."
            if cold
            else "The page cache could not be dropped (not root): the end-to-end row runs before anything else in "
            "this run reads the photos, but earlier processes may have left them cached."
        )
        body = (
            f"### Indexing throughput (issues 2, 24)\n\n"
            f"{n:,} real 416×416 JPEGs from `../shared/data/rooms`, {settings['model']} at {res} px (the default), "
            f"{settings['pooling']} pooling; the seed-style loop runs at the same resolution; the first precision "
            f"({top}) is the default. {read_note}\n\n"
            + markdown_table(["pipeline", "images/s", "vs model-only", "target"], rows)
            + f"\n\n- End to end at {top} ({first}) vs the seed-style loop: **{end_to_end / seed:.1f}× faster** "
            "(target ≥ 4×).\n"
            + "".join(
                f"- {p}: end to end {r['e2e'] / r['model']:.2f}× of model-only with the photos read from disk, "
                f"{r['warm'] / r['model']:.2f}× with them cached (target ≥ 0.8×).\n"
                for p, r in rates.items()
            )
            + (
                f"- int8 against fp32: model alone {rates['int8']['model'] / rates['fp32']['model']:.2f}×; end to end "
                f"{rates['int8']['e2e'] / rates['fp32']['e2e']:.2f}× from disk, {rates['int8']['warm'] / rates['fp32']['warm']:.2f}× "
                f"cached; with `--calibration photos` {rates['int8']['photos'] / rates['fp32']['warm']:.2f}× fp32's cached rate.\n"
                if {"int8", "fp32"} <= rates.keys()
                else ""
            )
            + f"- Full index run at {top} {full_s:.1f} s; re-indexing the unchanged folder {reindex_s:.2f} s = "
            f"**{100 * reindex_s / full_s:.1f}%** of a full run (target ≤ 2%).\n"
        )
        write_section(
            f"indexing-{n}" if args.limit else "indexing",  # a smaller run keeps the full collection's section
            body,
            {
                **settings,
                "batch": DEFAULT_BATCH,
                "data": f"rooms, {n:,} images",
                "page cache": "dropped before the end-to-end run" if cold else "not dropped",
                "precisions": args.precisions,
            },
        )
        print(body)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
