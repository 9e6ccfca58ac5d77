"""Issues 2 and 24 figures: end-to-end indexing throughput against the model alone and against a seed-style eager
loop, at fp32 and int8, and the cost of re-indexing an unchanged folder. All measured in one run, as ratios.

The end-to-end run comes first, after dropping the page cache (``echo 1 > /proc/sys/vm/drop_caches``, root only), so
it pays for reading the photos from disk; the model-only step decodes every file beforehand and would otherwise
leave them all cached. A second end-to-end run over the then cached files shows what the read costs.

    flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.indexing [--limit N] [--precisions fp32,int8]

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images (0 = all)")
    ap.add_argument("--seed-images", type=int, default=300, help="images for the seed-style eager loop")
    ap.add_argument("--resolution", type=int, default=0, help="input size (0 = the model's default)")
    ap.add_argument("--precisions", default="fp32,int8", help="fp32 always runs first; add int8 to compare it")
    args = ap.parse_args()
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

        # warm the model (ONNX export is cached; first session run allocates)
        describer = Describer(create_model("efficientnet-lite0"), make_pooling("gem"), args.resolution or None)
        res = describer.resolution
        describer.describe_arrays(np.zeros((8, res, res, 3), np.uint8), np.full((8, 2), res))

        # 1. end to end, first thing to read the photos: discovery, read, hash, decode, letterbox, model, pooling,
        # Parquet, checkpoints
        cold = drop_page_cache()
        start = time.perf_counter()
        idx = Index.build(src, work / "index", pooling="gem", resolution=res)
        full_s = time.perf_counter() - start
        end_to_end = n / full_s
        assert len(idx) == n, (len(idx), n)

        # 2. re-index unchanged
        start = time.perf_counter()
        again = Index.build(src, work / "index")
        reindex_s = time.perf_counter() - start
        assert again.report.embedded == 0

        # 3. model alone on pre-decoded tensors (decoding reads every file: the page cache now holds them); the
        # same tensors serve the int8 model below: preparing an image does not depend on the precision
        prepared = [describer.prepare_image(load_image(p, target=res)) for p in paths]
        pixels = np.stack([p for p, _ in prepared])
        valid = np.array([v for _, v in prepared])
        del prepared

        def model_rate(d: Describer) -> float:
            d.describe_arrays(pixels[:8], valid[:8])  # the first run allocates
            start = time.perf_counter()
            for i in range(0, n, DEFAULT_BATCH):
                d.describe_arrays(pixels[i : i + DEFAULT_BATCH], valid[i : i + DEFAULT_BATCH])
            return n / (time.perf_counter() - start)

        model_only = model_rate(describer)

        # 3b. end to end again from scratch, the photos now in the page cache (what the old ordering measured)
        start = time.perf_counter()
        Index.build(src, work / "index-warm", pooling="gem", resolution=res)
        warm = n / (time.perf_counter() - start)

        # 3c. int8: calibrated on these photos as Index.build does, then the same two measurements (photos cached)
        int8 = {}
        if "int8" in args.precisions.split(","):
            q = Describer(create_model("efficientnet-lite0", precision="int8"), make_pooling("gem"), res)
            q.calibrate(paths, work / "int8.onnx")
            int8["model"] = model_rate(q)
            start = time.perf_counter()
            Index.build(src, work / "index-int8", pooling="gem", resolution=res, precision="int8")
            int8["e2e"] = n / (time.perf_counter() - start)

        # 4. seed-style per-image eager torch loop
        seed = seed_style_loop(paths[: args.seed_images], res)

        first = "page cache dropped first" if cold else "page cache not dropped (not permitted), run first"
        rows = [
            [f"model alone, pre-decoded tensors (ONNX Runtime, batch {DEFAULT_BATCH})", f"{model_only:.1f}", "1.00×", ""],
            [f"`Index.build` end to end ({first})", f"{end_to_end:.1f}", f"{end_to_end / model_only:.2f}×",
             "≥ 0.8× of model-only"],
            ["`Index.build` end to end, photos already in the page cache", f"{warm:.1f}", f"{warm / model_only:.2f}×",
             ""],
            [f"seed-style loop (per image, eager torch; {min(n, args.seed_images)} images)", f"{seed:.1f}",
             f"{seed / model_only:.2f}×", ""],
        ]  # fmt: skip
        if int8:
            rows += [
                [f"int8: model alone, pre-decoded tensors (batch {DEFAULT_BATCH})", f"{int8['model']:.1f}",
                 f"{int8['model'] / model_only:.2f}×", ""],
                ["int8: `Index.build` end to end incl. calibration, photos cached", f"{int8['e2e']:.1f}",
                 f"{int8['e2e'] / model_only:.2f}×", ""],
            ]  # fmt: skip
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
            f"{settings['pooling']} pooling; the seed-style loop runs at the same resolution. {read_note}\n\n"
            + markdown_table(["pipeline", "images/s", "vs model-only", "target"], rows)
            + f"\n\n- End to end ({first}) vs the seed-style loop: **{end_to_end / seed:.1f}× faster** (target ≥ 4×).\n"
            f"- End to end with the photos already cached runs at {warm / end_to_end:.2f}× the speed of the run "
            f"that read them ({first}).\n"
            + (
                f"- int8 (`--precision int8`, calibrated on 64 of the photos): model alone {int8['model'] / model_only:.2f}× "
                f"fp32's; end to end with the photos cached {int8['e2e'] / warm:.2f}× fp32's.\n"
                if int8
                else ""
            )
            + f"- Full index run {full_s:.1f} s; re-indexing the unchanged folder {reindex_s:.2f} s = "
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
