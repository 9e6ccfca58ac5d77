"""Coverage-guided fuzzing (atheris, libFuzzer for Python) of what reads untrusted bytes: the image decoder path and
the detections JSON.

Targets:
- ``decode``: :func:`lookalike.images.decode` on the bytes (open, size policy, draft, EXIF orientation, mode
  conversion, EXIF time and GPS), with and without a model target size;
- ``raw``: the same on the bytes as a ``.dng`` (LibRaw, through rawpy);
- ``detections``: :func:`lookalike.scenes.load_detections` on the bytes as a file.

A finding is any exception other than :class:`lookalike.errors.LookalikeError` (or a one-line message breaking that
rule). The seed corpus is small valid files made here (:func:`seed_corpus`): JPEGs with EXIF orientation, time and
GPS, PNGs in every mode, TIFF, WebP, BMP, GIF, and detections in each format. Every crash found becomes a fixed bug
with a regression test (tests/test_fuzz.py replays the seeds and the inputs that once crashed).

Run: ``pip install -e '.[fuzz]'`` (atheris), then ``python -m bench.fuzz [--seconds 300]``; each target runs in its
own process for an equal share of the time. A target that runs no input ends the run without writing the section.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
from pathlib import Path

NAME = "fuzz"
FIXED = [
    "a TIFF whose strip offset is a rational made Pillow raise TypeError while loading its pixels (found after "
    "24,481 executions of the decode target in the 2026-12-06 run; now a one-line 'corrupt or truncated image')",
    "malformed EXIF tags made `ImageOps.exif_transpose` raise TypeError, AttributeError or struct.error (9 inputs; "
    "the orientation is now read without re-writing the EXIF block)",
    "a truncated HEIC made pillow-heif raise EOFError when its pixels were loaded, after the header had opened "
    "(found within 874 executions of the first run with HEIC seeds; now a one-line 'corrupt or truncated image')",
    "a DNG that LibRaw demosaiced to pixels of shape (1, 1, 1) made `Image.fromarray` raise TypeError (found within "
    "151 executions of the first run of the raw target; now a one-line 'not a RAW photo LibRaw can read')",
    "a DNG whose embedded bitmap preview LibRaw gave as a (1, 1, 1) array, the same TypeError on the preview path "
    "(found by the second run of the raw target, after 44,241 executions; such a preview is now passed over for "
    "the demosaic)",
]
"""What earlier runs found, each fixed with its input replayed by tests/test_fuzz.py (bench/results/fuzz)."""


def seed_corpus() -> dict[str, list[bytes]]:
    """Small valid inputs that reach every branch worth mutating from."""
    import piexif
    from PIL import Image

    images: list[bytes] = []

    def save(img: Image.Image, fmt: str, **kw: object) -> None:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        images.append(buf.getvalue())

    base = Image.new("RGB", (24, 18), (200, 40, 40))
    base.paste((20, 20, 200), (0, 0, 12, 5))
    gps = {
        piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: ((52, 1), (31, 1), (1234, 100)),
        piexif.GPSIFD.GPSLongitudeRef: b"W", piexif.GPSIFD.GPSLongitude: ((13, 1), (24, 1), (0, 1)),
    }  # fmt: skip
    for orientation in (1, 3, 6, 8):
        exif = piexif.dump({
            "0th": {piexif.ImageIFD.Orientation: orientation, piexif.ImageIFD.DateTime: b"2024:05:06 07:08:09"},
            "Exif": {piexif.ExifIFD.DateTimeOriginal: b"2024:05:06 07:08:09"}, "GPS": gps,
        })  # fmt: skip
        save(base, "JPEG", quality=80, exif=exif)
    save(base.convert("L"), "JPEG")
    save(base.convert("CMYK"), "JPEG")
    save(base.resize((64, 48)), "JPEG", progressive=True)
    for mode in ("RGB", "RGBA", "L", "LA", "P", "1", "I;16"):
        save(base.convert(mode) if mode != "I;16" else base.convert("L").convert("I;16"), "PNG")
    save(base, "TIFF")
    save(base, "WEBP", quality=50)
    save(base, "BMP")
    save(base.convert("P"), "GIF")
    from lookalike.images import can_read

    exif6 = Image.Exif()
    exif6[0x0112] = 6  # orientation
    if can_read("heif"):  # HEIC and AVIF: sniffed from the bytes, decoded through Pillow's openers
        save(base, "HEIF", quality=50, enc_params={"preset": "ultrafast"})
        save(base, "HEIF", quality=50, enc_params={"preset": "ultrafast"}, exif=exif6.tobytes())
    if can_read("avif"):
        save(base, "AVIF", quality=50, speed=10)
        save(base, "AVIF", quality=50, speed=10, exif=exif6.tobytes())
    raws: list[bytes] = []
    try:
        import rawpy  # noqa: F401
    except ImportError:
        pass
    else:  # DNG (LibRaw through rawpy): with a JPEG preview, an RGB one, none (demosaic), metadata in the preview
        from lookalike.samples import write_dng

        with tempfile.TemporaryDirectory() as tmp:
            exif = Image.Exif()
            exif[0x0112] = 6
            for i, kw in enumerate([{"preview": 16}, {"preview": 16, "jpeg_preview": False}, {"preview": None},
                                    {"preview": 16, "metadata_in": "preview"}]):  # fmt: skip
                raws.append(write_dng(Path(tmp) / f"{i}.dng", base.resize((32, 24)), exif=exif, **kw).read_bytes())
    boxes = [
        {"a": {"x1": 1, "y1": 2, "x2": 30, "y2": 40}, "b": {"x1": 5, "y1": 5, "x2": 9, "y2": 9}},
        [[1, 2, 30, 40], [5, 5, 9, 9]],
        {"annotations": [{"bbox": [1, 2, 29, 38], "id": 7}]},
        [{"id": "x", "x1": 0, "y1": 0, "x2": 10, "y2": 10}],
    ]
    return {"decode": images, "raw": raws, "detections": [json.dumps(b).encode() for b in boxes]}


def check_decode(data: bytes, name: str = "fuzz.jpg") -> None:
    """The decoder path; ``name`` ends in .dng for the camera-RAW path (a file named .dng goes to LibRaw whatever its
    bytes: RAWs are often TIFF inside)."""
    from lookalike.errors import LookalikeError
    from lookalike.images import decode

    for target in (None, 32):
        try:
            img, meta = decode(data, name, target=target)
        except LookalikeError as exc:
            if "\n" in str(exc):
                raise AssertionError(f"multi-line error: {exc!r}") from None
            continue
        assert img.mode == "RGB" and min(img.size) >= 1, (img.mode, img.size)
        assert meta.gps_lat is None or -90 <= meta.gps_lat <= 90


def check_raw(data: bytes) -> None:
    check_decode(data, "fuzz.dng")


def check_detections(data: bytes) -> None:
    from lookalike.errors import LookalikeError
    from lookalike.scenes import load_detections

    path = Path(tempfile.gettempdir()) / f"lookalike-fuzz-{os.getpid()}.json"
    path.write_bytes(data)
    try:
        load_detections(path)
    except LookalikeError as exc:
        if "\n" in str(exc):
            raise AssertionError(f"multi-line error: {exc!r}") from None


TARGETS = {"decode": check_decode, "raw": check_raw, "detections": check_detections}


def _run_target(name: str, seconds: float, corpus_dir: str, artifacts: str, result_file: str) -> None:
    """One atheris run (libFuzzer exits the process on a crash, so each target gets its own)."""
    import atheris

    with atheris.instrument_imports():
        import lookalike.images  # noqa: F401
        import lookalike.scenes  # noqa: F401
    target = TARGETS[name]
    log = os.open(result_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 2)  # libFuzzer's final stats (executions, corpus) go to stderr; the parent reads them from here

    argv = [sys.argv[0], f"-max_total_time={int(seconds)}", f"-artifact_prefix={artifacts}/", "-max_len=65536",
            "-rss_limit_mb=3072", "-print_final_stats=1", corpus_dir]  # fmt: skip
    atheris.Setup(argv, target)
    atheris.Fuzz()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300, help="total fuzzing time, split between the targets")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    from bench.report import markdown_table, write_section

    try:
        import atheris  # noqa: F401
    except ImportError:  # a run of nothing would write a section saying "no findings"
        sys.exit("bench.fuzz needs atheris: pip install -e '.[fuzz]'")
    rows = []
    findings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lookalike-fuzz-") as tmp:
        seeds = seed_corpus()
        for name in TARGETS:
            corpus = Path(tmp) / name / "corpus"
            artifacts = Path(tmp) / name / "artifacts"
            corpus.mkdir(parents=True)
            artifacts.mkdir(parents=True)
            if not seeds[name]:
                continue  # e.g. no rawpy here
            for i, data in enumerate(seeds[name]):
                (corpus / f"seed{i:03d}").write_bytes(data)
            result = Path(tmp) / name / "libfuzzer.log"
            started = time.perf_counter()
            ctx = multiprocessing.get_context("spawn")
            proc = ctx.Process(
                target=_run_target, args=(name, args.seconds / len(TARGETS), str(corpus), str(artifacts), str(result))
            )
            proc.start()
            proc.join()
            elapsed = time.perf_counter() - started
            stats = result.read_text(errors="replace") if result.exists() else ""
            found = re.findall(r"stat::number_of_executed_units:\s*(\d+)", stats)
            executions = int(found[-1]) if found else 0
            if not executions:
                sys.exit(f"the {name} target ran no input (exit code {proc.exitcode}): nothing written")
            crashes = sorted(artifacts.iterdir())
            keep = Path(__file__).parent / "results" / "fuzz"  # inputs that crashed, for the regression tests
            for c in crashes:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"{name}-{c.name}").write_bytes(c.read_bytes())
                log = result.read_text(errors="replace") if result.exists() else ""
                (keep / f"{name}-{c.name}.log").write_text(log[-6000:])
            for c in crashes:
                findings.append(f"{name}: {c.name} ({len(c.read_bytes())} bytes): {c.read_bytes()[:60]!r}")
            rows.append([name, len(seeds[name]), len(list(corpus.iterdir())), f"{executions:,}",
                         f"{executions / elapsed:.0f}", len(crashes)])  # fmt: skip
            print(rows[-1], flush=True)
    body = "\n".join(
        [
            f"## Fuzzing (`{NAME}`)",
            "",
            f"atheris (libFuzzer, coverage-guided) for {args.seconds:g} s in all, split between the targets: `decode` "
            "(`lookalike.images.decode` with and without a model size: open, size policy, draft, EXIF orientation, "
            "mode conversion, EXIF time and GPS), `raw` (the same on a `.dng`) and `detections` (`lookalike.scenes.load_detections` on the bytes as "
            "a file). A finding is any exception but a one-line `LookalikeError`. Seeds: small valid files made by "
            "`bench.fuzz.seed_corpus` (JPEG with EXIF orientation/time/GPS, grey, CMYK, progressive; PNG in 7 modes; "
            "TIFF, WebP, BMP, GIF; HEIC and AVIF, plain and with an EXIF orientation; detections in each format). "
            "`raw`: the same decoder on the bytes as a `.dng` (LibRaw through rawpy, which takes any file with a "
            "RAW extension), seeds four small DNGs by `lookalike.samples.write_dng` (JPEG preview, RGB preview, no "
            "preview, metadata only in the preview).",
            "",
            markdown_table(["target", "seeds", "corpus at the end", "executions", "per second", "findings"], rows),
            "",
            "Findings: " + ("; ".join(findings) if findings else "none in this run."),
            "",
            "Found by earlier runs and fixed: " + "; ".join(FIXED) + ".",
        ]
    )
    if not args.no_write:
        write_section(NAME, body, {"seconds": args.seconds, "engine": "atheris"})
    print(body)


if __name__ == "__main__":
    main()
