"""Issue 26 figures: photos as phones and cameras write them. The same real photos saved as JPEG, HEIC, AVIF and as
DNGs (with a large embedded JPEG preview, and without one, so LibRaw demosaics): decode-to-model-input time per image,
end-to-end indexing images/s per folder, agreement of each format's embedding with the JPEG's, and EXIF time/GPS
read back. All measured side by side in one run (the machine is shared: decode timings interleave the formats image
by image, and each folder is indexed twice in alternating order, best run kept).

    flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.formats [--limit N]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import dataset
from bench.report import index_settings, markdown_table, write_section
from lookalike import Index
from lookalike.images import decode, find_images, letterbox
from lookalike.samples import write_dng

FORMATS = {
    "jpeg": ("JPEG (original file, draft-mode decode)", ".jpg"),
    "heic": ("HEIC (pillow-heif, quality 90)", ".heic"),
    "avif": ("AVIF (Pillow, quality 90)", ".avif"),
    "raw-preview": ("DNG, 1024 px JPEG preview (preview path)", ".dng"),
    "raw-demosaic": ("DNG, no preview (half-size demosaic)", ".dng"),
}
RAW_MAX = 2048  # the DNGs' sensor size is capped so that 2 × N 16-bit raws fit comfortably in /tmp


def sources(limit: int) -> list[Path]:
    """Real photos 1024-3264 px from cameras and phones, 32 of them with camera GPS (places/berlin, places/lund)."""
    found = find_images(dataset("interiors")) + find_images(dataset("places"))
    return found[:limit] if limit else found


def convert(photos: list[Path], out: Path) -> None:
    """Each photo once per format, as ``out/<format>/<n>.<ext>``, carrying its EXIF (orientation, time, GPS)."""
    for kind in FORMATS:
        (out / kind).mkdir(parents=True, exist_ok=True)
    for n, src in enumerate(photos):
        stem = f"{n:03d}"
        data = src.read_bytes()
        (out / "jpeg" / f"{stem}.jpg").write_bytes(data)
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            exif = img.info.get("exif")
            kwargs = {"exif": exif} if exif else {}
            # fastest encoder settings (x265 "ultrafast", aom speed 10): conversion time only, decoding is the same work
            img.save(out / "heic" / f"{stem}.heic", "HEIF", quality=90, enc_params={"preset": "ultrafast"}, **kwargs)
            img.save(out / "avif" / f"{stem}.avif", "AVIF", quality=90, speed=10, **kwargs)
            raw = img.copy()
            raw.thumbnail((RAW_MAX, RAW_MAX))
            write_dng(out / "raw-preview" / f"{stem}.dng", raw, exif=img.getexif(), preview=1024)
            write_dng(out / "raw-demosaic" / f"{stem}.dng", raw, exif=img.getexif(), preview=None)


def decode_times(folder: Path, n: int, resolution: int, rounds: int) -> dict[str, list[float]]:
    """Per image and format, the best of ``rounds`` timings of bytes -> decode -> letterboxed model input (ms)."""
    times: dict[str, list[float]] = {k: [] for k in FORMATS}
    for i in range(n):
        blobs = {k: (folder / k / f"{i:03d}{ext}").read_bytes() for k, (_, ext) in FORMATS.items()}
        best = dict.fromkeys(FORMATS, float("inf"))
        for _ in range(rounds):
            for kind, data in blobs.items():  # interleaved: load swings hit every format alike
                start = time.perf_counter()
                img, _ = decode(data, f"x{FORMATS[kind][1]}", target=resolution)
                letterbox(img, resolution)
                best[kind] = min(best[kind], time.perf_counter() - start)
        for kind in FORMATS:
            times[kind].append(best[kind] * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="use only the first N photos (0 = all 82)")
    ap.add_argument("--rounds", type=int, default=3, help="decode timings: best of this many per image")
    ap.add_argument("--keep", type=Path, default=None, help="keep the converted folders here (reused when present)")
    args = ap.parse_args()
    photos = sources(args.limit)
    work = Path(tempfile.mkdtemp(prefix="lookalike-bench-formats-"))
    folder = args.keep or work / "photos"
    try:
        if not (folder / "raw-demosaic" / f"{len(photos) - 1:03d}.dng").is_file():
            start = time.perf_counter()
            convert(photos, folder)
            print(f"converted {len(photos)} photos in {time.perf_counter() - start:.0f} s")
        sizes = {k: sum(p.stat().st_size for p in (folder / k).iterdir()) / len(photos) for k in FORMATS}

        # end to end: fresh index per folder, two runs in alternating order, best kept
        seconds: dict[str, float] = {}
        indexes: dict[str, Index] = {}
        for order in (list(FORMATS), list(reversed(FORMATS))):
            for kind in order:
                shutil.rmtree(work / f"index-{kind}", ignore_errors=True)
                start = time.perf_counter()
                indexes[kind] = Index.build(folder / kind, work / f"index-{kind}", labels="none")
                took = time.perf_counter() - start
                seconds[kind] = min(seconds.get(kind, float("inf")), took)
                assert len(indexes[kind]) == len(photos), (kind, len(indexes[kind]), indexes[kind].store.skipped)
        resolution = indexes["jpeg"].describer.resolution
        times = decode_times(folder, len(photos), resolution, args.rounds)

        def rows_by_stem(kind: str) -> dict[str, dict]:
            table = indexes[kind].store.table.select(["path", "vector", "gps_lat", "exif_time", "width", "height"])
            return {Path(r["path"]).stem: r for r in table.to_pylist()}

        ref = rows_by_stem("jpeg")
        rows = []
        for kind, (label, _) in FORMATS.items():
            got = rows_by_stem(kind)
            cos = [float(np.dot(ref[s]["vector"], got[s]["vector"])) for s in ref]
            gps = sum(r["gps_lat"] is not None for r in got.values())
            same_meta = sum(  # the DNGs' sensor is capped, so the upright aspect is compared, not the size
                (got[s]["gps_lat"], got[s]["exif_time"], got[s]["width"] > got[s]["height"])
                == (ref[s]["gps_lat"], ref[s]["exif_time"], ref[s]["width"] > ref[s]["height"])
                for s in ref
            )
            ms = times[kind]
            rows.append(
                [
                    label,
                    f"{sizes[kind] / 1e6:.2f}",
                    f"{statistics.median(ms):.1f}",
                    f"{statistics.median(ms) / statistics.median(times['jpeg']):.1f}×",
                    f"{len(photos) / seconds[kind]:.1f}",
                    "1 (itself)" if kind == "jpeg" else f"{statistics.median(cos):.4f} / {min(cos):.4f}",
                    f"{gps} / {same_meta}",
                ]
            )
        gps_ref = sum(r["gps_lat"] is not None for r in ref.values())
        body = (
            "### Phone and camera formats: HEIC, AVIF, RAW (issue 26)\n\n"
            f"{len(photos)} real photos (`../shared/data/interiors` 1920×2880 and `places` 1024–3264 px; {gps_ref} carry "
            "camera GPS), each saved in every format with its EXIF. The DNGs are written by `lookalike.samples."
            f"write_dng` (a 12-bit RGGB mosaic of the photo, sensor capped at {RAW_MAX} px), since no camera RAW can be "
            f"had offline. EfficientNet-Lite0 at {resolution} px, GeM, default workers. Decode = bytes in memory → "
            "upright RGB → letterboxed model input, one thread, median over photos of the best of "
            f"{args.rounds}; indexing = `Index.build` of each folder from scratch, best of 2 runs in alternating "
            "order. Cosine: each format's vector against the JPEG's vector of the same photo (median / minimum).\n\n"
            + markdown_table(
                [
                    "format",
                    "MB/file",
                    "decode ms/image",
                    "vs JPEG",
                    "index images/s",
                    "cosine to JPEG (median / min)",
                    "GPS read / time, GPS and upright aspect as JPEG's",
                ],
                rows,
            )
            + "\n"
        )
        write_section(
            "formats",
            body,
            {
                **index_settings(indexes["jpeg"].store.meta),
                "data": f"{len(photos)} photos from interiors and places",
                "decode rounds": args.rounds,
                "RAW sensor cap": f"{RAW_MAX} px",
            },
        )
        print(body)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the converted photos too, unless --keep put them elsewhere


if __name__ == "__main__":
    main()
