"""Issue 24 figures: int8 (static QDQ, per-channel, calibrated on the user's photos) against fp32, same run.

1. Model alone on pre-decoded 416×416 room photos letterboxed to 320 px and 224 px: images/s at batch 8 and 16,
   fp32 and int8 sessions alternating round by round (best of the rounds), and calibration time.
2. Agreement: cosine between the fp32 and int8 GeM vector of each image (images not used for calibration).
3. Quality: the shared indexes of ../shared/data/rooms (5-fold linear-probe accuracy) and flowers12 (MAP@R, each image
   against the rest), built at fp32 and at int8 (``Index.build(..., precision="int8")``, calibrated on 64 of the
   collection's own images), plus the cosine of every image's two vectors.

    flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.quantize [--skip-quality]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import dataset, shared_index
from bench.report import markdown_table, write_section
from lookalike.aggregate import make_pooling
from lookalike.embed import Describer
from lookalike.evaluate import cross_validate, retrieval_metrics
from lookalike.images import find_images, load_image
from lookalike.models import create_model


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def throughput(describer: Describer, pixels: np.ndarray, valid: np.ndarray, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(pixels), batch):
        describer.describe_arrays(pixels[i : i + batch], valid[i : i + batch])
    return len(pixels) / (time.perf_counter() - start)


def speed_and_agreement(paths: list[Path], resolution: int, rounds: int, work: Path) -> dict:
    calib, test = paths[:64], paths[64:]
    fp32 = Describer(create_model("efficientnet-lite0"), make_pooling("gem"), resolution)
    int8 = Describer(create_model("efficientnet-lite0", precision="int8"), make_pooling("gem"), resolution)
    start = time.perf_counter()
    note = int8.calibrate(calib, work / f"int8-{resolution}.onnx")
    calib_s = time.perf_counter() - start
    prepared = [fp32.prepare_image(load_image(p, target=resolution)) for p in test]
    pixels = np.stack([p for p, _ in prepared])
    valid = np.array([v for _, v in prepared])
    for d in (fp32, int8):  # first runs allocate
        d.describe_arrays(pixels[:8], valid[:8])
    rates: dict[tuple[str, int], float] = {}
    for _ in range(rounds):
        for batch in (8, 16):
            for name, d in (("fp32", fp32), ("int8", int8)):
                rates[name, batch] = max(rates.get((name, batch), 0.0), throughput(d, pixels, valid, batch))
    a = fp32.describe_arrays(pixels, valid)
    b = int8.describe_arrays(pixels, valid)
    cos = np.sum(a * b, axis=1)
    return {"rates": rates, "cos": cos, "calib_s": calib_s, "note": note, "n": len(test)}


def quality(name: str) -> dict:
    out = {}
    for precision in ("fp32", "int8"):
        start = time.perf_counter()
        index = shared_index(name) if precision == "fp32" else shared_index(name, precision="int8")
        print(f"{name} {precision}: {len(index)} images ({time.perf_counter() - start:.0f} s)", flush=True)
        rows = [i for i, lab in enumerate(index.labels) if lab is not None]
        X = index.vectors[rows]  # noqa: N806
        y = [index.labels[i] for i in rows]
        names = [index.names[i] for i in rows]
        out[precision] = {"X": X, "y": y, "names": names}
        if name == "rooms":
            out[precision]["score"] = cross_validate(X, y, "linear", folds=5)["accuracy"]
        else:
            out[precision]["score"] = retrieval_metrics(X, y, X, y, exclude=[[i] for i in range(len(y))])["map_at_r"]
    pos = {n: i for i, n in enumerate(out["fp32"]["names"])}
    b = out["int8"]
    idx = [pos[n] for n in b["names"]]
    out["cos"] = np.sum(out["fp32"]["X"][idx] * b["X"], axis=1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256, help="room photos for speed and agreement (64 calibrate)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-quality", action="store_true")
    args = ap.parse_args()
    flags = cpu_flags()
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags) or "none"
    paths = find_images(dataset("rooms"))
    paths = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))[: args.images]]
    with tempfile.TemporaryDirectory() as tmp:
        results = {res: speed_and_agreement(paths, res, args.rounds, Path(tmp)) for res in (320, 224)}
    rows = []
    for res, r in results.items():
        for batch in (8, 16):
            f, q = r["rates"]["fp32", batch], r["rates"]["int8", batch]
            rows.append([f"{res} px", batch, f"{f:.1f}", f"{q:.1f}", f"**{q / f:.2f}×**"])
    agree = [
        [f"{res} px", r["n"], f"{np.median(r['cos']):.4f}", f"{np.percentile(r['cos'], 5):.4f}", f"{r['cos'].min():.4f}",
         f"{r['calib_s']:.0f}"]
        for res, r in results.items()
    ]  # fmt: skip
    r320 = results[320]
    speedup = r320["rates"]["int8", 8] / r320["rates"]["fp32", 8]
    parts = [
        "### int8 against fp32 (issue 24)",
        f"EfficientNet-Lite0, GeM; ONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8 "
        f"activations, MinMax calibration on 64 room photos). CPU instruction sets for int8: **{isa}**. Model "
        f"alone on {r320['n']} pre-decoded room photos (not the calibration ones), best of {args.rounds} alternating "
        "rounds:",
        markdown_table(["input", "batch", "fp32 img/s", "int8 img/s", "int8 / fp32"], rows),
        "Cosine between each image's fp32 and int8 vectors (and the one-off calibration time):",
        markdown_table(["input", "images", "median", "5th pct", "min", "calibration s"], agree),
    ]
    summary = [f"- Model-only speed-up at 320 px, batch 8: **{speedup:.2f}×** (goal ≥ 1.5×)."]
    summary.append(f"- Median cosine at 320 px: **{np.median(r320['cos']):.4f}** (goal ≥ 0.98).")
    if not args.skip_quality:
        rooms, flowers = quality("rooms"), quality("flowers12")
        qrows = [
            ["rooms: 5-fold linear-probe accuracy", len(rooms["fp32"]["y"]), f"{rooms['fp32']['score']:.4f}",
             f"{rooms['int8']['score']:.4f}", f"{100 * (rooms['int8']['score'] - rooms['fp32']['score']):+.2f}",
             f"{np.median(rooms['cos']):.4f}"],
            ["flowers12: MAP@R", len(flowers["fp32"]["y"]), f"{flowers['fp32']['score']:.4f}",
             f"{flowers['int8']['score']:.4f}", f"{100 * (flowers['int8']['score'] - flowers['fp32']['score']):+.2f}",
             f"{np.median(flowers['cos']):.4f}"],
        ]  # fmt: skip
        parts += [
            "Quality, whole collections at the default 320 px (int8 calibrated on 64 of each collection's photos):",
            markdown_table(["measure", "images", "fp32", "int8", "change (points)", "median cosine"], qrows),
        ]
        lost = max(
            100 * (rooms["fp32"]["score"] - rooms["int8"]["score"]),
            100 * (flowers["fp32"]["score"] - flowers["int8"]["score"]),
        )
        summary.append(f"- Largest quality loss: **{lost:.2f} points** (goal ≤ 0.5).")
    body = "\n\n".join(parts) + "\n\n" + "\n".join(summary) + "\n"
    write_section("quantize", body)
    print(body)


if __name__ == "__main__":
    main()
