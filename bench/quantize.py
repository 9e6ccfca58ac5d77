"""Issue 24 figures: int8 (static QDQ, per-channel) against fp32, same run, for both calibration sources: the bundled
sample photos (the default: made once per machine) and 64 of the user's own photos (``calibration="photos"``).

1. Model alone on pre-decoded 416×416 room photos letterboxed to 320 px and 224 px: images/s at batch 8 and 16,
   fp32 and int8 sessions alternating round by round (best of the rounds), and calibration time.
2. Agreement: cosine between the fp32 and int8 GeM vector of each image (images not used for calibration).
3. Quality: the shared indexes of ../shared/data/rooms (5-fold linear-probe accuracy) and flowers12 (MAP@R, each image
   against the rest), built at fp32 and at int8 with each calibration, plus the cosine of every image's vectors.

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

CALIBRATIONS = ("samples", "photos")  # the default first
WHAT = {"samples": "bundled samples (default)", "photos": "64 of the photos"}


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
    int8 = {}
    calib_s = {}
    for source in CALIBRATIONS:
        int8[source] = Describer(create_model("efficientnet-lite0", precision="int8"), make_pooling("gem"), resolution)
        if source == "samples":  # time a first calibration, as a machine's first index pays it
            int8[source].samples_int8_path.unlink(missing_ok=True)
        start = time.perf_counter()
        int8[source].calibrate(calib, work / f"int8-{source}-{resolution}.onnx", source=source)
        calib_s[source] = time.perf_counter() - start
    prepared = [fp32.prepare_image(load_image(p, target=resolution)) for p in test]
    pixels = np.stack([p for p, _ in prepared])
    valid = np.array([v for _, v in prepared])
    quick = int8["samples"]  # the default; both int8 models have the same graph, so the same speed
    for d in (fp32, quick):  # first runs allocate
        d.describe_arrays(pixels[:8], valid[:8])
    rates: dict[tuple[str, int], float] = {}
    for _ in range(rounds):
        for batch in (8, 16):
            for name, d in (("fp32", fp32), ("int8", quick)):
                rates[name, batch] = max(rates.get((name, batch), 0.0), throughput(d, pixels, valid, batch))
    a = fp32.describe_arrays(pixels, valid)
    cos = {source: np.sum(a * d.describe_arrays(pixels, valid), axis=1) for source, d in int8.items()}
    return {"rates": rates, "cos": cos, "calib_s": calib_s, "n": len(test)}


def quality(name: str) -> dict:
    out = {}
    for variant in ("fp32", *CALIBRATIONS):
        start = time.perf_counter()
        kwargs = {} if variant == "fp32" else {"precision": "int8", "calibration": variant}  # fp32: the default
        index = shared_index(name, **kwargs)
        print(f"{name} {variant}: {len(index)} images ({time.perf_counter() - start:.0f} s)", flush=True)
        rows = [i for i, lab in enumerate(index.labels) if lab is not None]
        X = index.vectors[rows]  # noqa: N806
        y = [index.labels[i] for i in rows]
        names = [index.names[i] for i in rows]
        out[variant] = {"X": X, "y": y, "names": names}
        if name == "rooms":
            out[variant]["score"] = cross_validate(X, y, "linear", folds=5)["accuracy"]
        else:
            out[variant]["score"] = retrieval_metrics(X, y, X, y, exclude=[[i] for i in range(len(y))])["map_at_r"]
    pos = {n: i for i, n in enumerate(out["fp32"]["names"])}
    for variant in CALIBRATIONS:
        b = out[variant]
        out[variant]["cos"] = np.sum(out["fp32"]["X"][[pos[n] for n in b["names"]]] * b["X"], axis=1)
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
        [f"{res} px", WHAT[src], r["n"], f"{np.median(r['cos'][src]):.4f}", f"{np.percentile(r['cos'][src], 5):.4f}",
         f"{r['cos'][src].min():.4f}", f"{r['calib_s'][src]:.1f}"]
        for res, r in results.items() for src in CALIBRATIONS
    ]  # fmt: skip
    r320 = results[320]
    speedup = r320["rates"]["int8", 8] / r320["rates"]["fp32", 8]
    parts = [
        "### int8 against fp32 (issue 24)",
        f"EfficientNet-Lite0, GeM; ONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8 "
        f"activations, MinMax calibration). CPU instruction sets for int8: **{isa}**. Model alone on {r320['n']} "
        f"pre-decoded room photos (not the calibration ones), best of {args.rounds} alternating rounds:",
        markdown_table(["input", "batch", "fp32 img/s", "int8 img/s", "int8 / fp32"], rows),
        "Cosine between each image's fp32 and int8 vectors, for each calibration: the bundled sample photos (24 "
        "views of 4 photos; made once per machine and resolution, then copied into every new index) or 64 of the "
        "room photos (`--calibration photos`, paid by every new index). Calibration seconds are a first calibration:",
        markdown_table(["input", "calibrated on", "images", "median", "5th pct", "min", "calibration s"], agree),
    ]
    summary = [f"- Model-only speed-up at 320 px, batch 8: **{speedup:.2f}×** (goal ≥ 1.5×)."]
    summary.append(
        f"- Median cosine at 320 px, default calibration: **{np.median(r320['cos']['samples']):.4f}** (goal ≥ 0.98); "
        f"calibrated on the photos: {np.median(r320['cos']['photos']):.4f}."
    )
    if not args.skip_quality:
        rooms, flowers = quality("rooms"), quality("flowers12")
        qrows = []
        lost = 0.0
        for label, q in (("rooms: 5-fold linear-probe accuracy", rooms), ("flowers12: MAP@R", flowers)):
            for src in CALIBRATIONS:
                change = 100 * (q[src]["score"] - q["fp32"]["score"])
                lost = max(lost, -change) if src == "samples" else lost
                qrows.append([label, WHAT[src], len(q["fp32"]["y"]), f"{q['fp32']['score']:.4f}",
                              f"{q[src]['score']:.4f}", f"{change:+.2f}", f"{np.median(q[src]['cos']):.4f}"])  # fmt: skip
        parts += [
            "Quality, whole collections at the default 320 px:",
            markdown_table(
                ["measure", "int8 calibrated on", "images", "fp32", "int8", "change (points)", "median cosine"], qrows
            ),
        ]
        summary.append(f"- Largest quality loss, default calibration: **{lost:.2f} points** (goal ≤ 0.5).")
    body = "\n\n".join(parts) + "\n\n" + "\n".join(summary) + "\n"
    write_section("quantize", body)
    print(body)


if __name__ == "__main__":
    main()
