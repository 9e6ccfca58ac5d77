"""Sample photos for the demo and the tests, made from real photos that lookalike's dependencies ship.

scikit-learn ships two photos (a Chinese temple, a flower) and matplotlib one (Grace Hopper) plus a product shot;
each becomes a "class" of varied crops, flips, rotations and colour shifts. Retrieval on these is a fair smoke test:
a crop of the temple must find other temple crops, not the flower.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from lookalike.images import bundled_photos


def source_photos() -> dict[str, Path]:
    return bundled_photos()


def random_view(img: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    """A random crop (55–95% of the picture, aspect jittered), flip and resize: one more photo of the same subject,
    as the sample folders and the tests' own data sets need them."""
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
            random_view(img, rng, size).save(out / name / f"{name}_{i:02d}.jpg", quality=90)
        random_view(img, rng, size).save(queries / f"{name}.jpg", quality=90)
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


# --- photos as phones and cameras write them ---------------------------------------------------------------------


def photo_exif(
    *, time: str | None = None, gps: tuple[float, float] | None = None, orientation: int | None = None
) -> Image.Exif:
    """EXIF as a camera writes it: ``DateTimeOriginal`` ("YYYY:MM:DD HH:MM:SS"), a GPS IFD in degrees/minutes/
    seconds rationals, and the orientation tag; for writing test photos in any format Pillow can save with EXIF."""
    from PIL import TiffImagePlugin

    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if time is not None:
        exif.get_ifd(0x8769)[0x9003] = time
    if gps is not None:

        def dms(value: float) -> tuple:
            value = abs(value)
            d, m = int(value), int(value * 60) % 60
            s = round((value * 3600) % 60, 4)
            return tuple(TiffImagePlugin.IFDRational(v) for v in (d, m, s))

        lat, lon = gps
        exif.get_ifd(0x8825).update(
            {1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W", 4: dms(lon)}
        )
    return exif


_XYZ_TO_SRGB = (3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570)


_SHORT, _LONG, _BYTE, _ASCII, _RATIONAL, _SRATIONAL = 3, 4, 1, 2, 5, 10


class _Tiff:
    """A little-endian TIFF assembled by hand: blobs and IFDs placed one after another, word-aligned. Pillow's writer
    truncates the DNG tags it knows with another count, so DNG tags cannot go through it."""

    def __init__(self) -> None:
        self.out = bytearray(b"II*\x00\x00\x00\x00\x00")

    def place(self, blob: bytes) -> int:
        if len(self.out) % 2:
            self.out.append(0)
        at = len(self.out)
        self.out.extend(blob)
        return at

    @staticmethod
    def _value(kind: int, value: Any) -> tuple[bytes, int]:
        import struct
        from fractions import Fraction

        if kind == _ASCII:
            return str(value).encode("ascii") + b"\x00", len(str(value)) + 1
        fmt = {1: "B", 3: "H", 4: "I", 5: "I", 10: "i"}
        values = list(value) if isinstance(value, tuple | list) else [value]
        count = len(values)
        if kind in (_RATIONAL, _SRATIONAL):
            flat = []
            for v in values:
                f = Fraction(float(v)).limit_denominator(100000) if not isinstance(v, tuple) else None
                flat += list(v) if f is None else [f.numerator, f.denominator]
            values = flat
        return struct.pack(f"<{len(values)}{fmt[kind]}", *values), count

    def place_ifd(self, tags: dict[int, tuple[int, Any]]) -> int:
        """One IFD: entries sorted by tag, values over four bytes after it."""
        import struct

        if len(self.out) % 2:
            self.out.append(0)
        at = len(self.out)
        entries, extra = [], bytearray()
        data_at = at + 2 + 12 * len(tags) + 4
        for tag, (kind, value) in sorted(tags.items()):
            raw, count = self._value(kind, value)
            if len(raw) <= 4:
                entries.append(struct.pack("<HHI", tag, kind, count) + raw.ljust(4, b"\x00"))
            else:
                entries.append(struct.pack("<HHII", tag, kind, count, data_at + len(extra)))
                extra += raw + (b"\x00" if len(raw) % 2 else b"")
        self.out.extend(struct.pack("<H", len(entries)) + b"".join(entries) + b"\x00\x00\x00\x00" + extra)
        return at


def _bayer(image: Image.Image) -> np.ndarray:
    """The picture as a sensor records it: linear light, 12 bit, one colour per pixel in an RGGB mosaic."""
    v = np.arange(256) / 255.0
    to_linear = np.round(np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4) * 4095).astype(np.uint16)
    srgb = np.asarray(image.convert("RGB"))
    h, w = (srgb.shape[0] // 2) * 2, (srgb.shape[1] // 2) * 2
    rgb = to_linear[srgb[:h, :w]]
    cfa = np.empty((h, w), "<u2")
    cfa[0::2, 0::2], cfa[0::2, 1::2] = rgb[0::2, 0::2, 0], rgb[0::2, 1::2, 1]
    cfa[1::2, 0::2], cfa[1::2, 1::2] = rgb[1::2, 0::2, 1], rgb[1::2, 1::2, 2]
    return cfa


def _raw_ifd(tiff: _Tiff, cfa: np.ndarray) -> int:
    h, w = cfa.shape
    raw_at = tiff.place(cfa.tobytes())
    return tiff.place_ifd(
        {
            254: (_LONG, 0),
            256: (_LONG, w),
            257: (_LONG, h),
            258: (_SHORT, 16),
            259: (_SHORT, 1),
            262: (_SHORT, 32803),  # CFA
            273: (_LONG, raw_at),
            277: (_SHORT, 1),
            278: (_LONG, h),
            279: (_LONG, len(cfa.tobytes())),
            284: (_SHORT, 1),
            33421: (_SHORT, (2, 2)),  # CFARepeatPatternDim
            33422: (_BYTE, (0, 1, 1, 2)),  # CFAPattern: RGGB
            50717: (_LONG, 4095),  # WhiteLevel
        }
    )


def _preview_tags(
    tiff: _Tiff, image: Image.Image, preview: int, jpeg_preview: bool, exif: Image.Exif, metadata_in: str
) -> dict[int, tuple[int, Any]]:
    thumb = image.convert("RGB")
    thumb.thumbnail((preview, preview))
    if jpeg_preview:
        buf = io.BytesIO()
        own = Image.Exif()
        if metadata_in == "preview":  # time and GPS, not the orientation: that is the RAW's (IFD0) alone
            own.get_ifd(0x8769).update(exif.get_ifd(0x8769))
            own.get_ifd(0x8825).update(exif.get_ifd(0x8825))
        thumb.save(buf, "JPEG", quality=92, **({"exif": own.tobytes()} if metadata_in == "preview" else {}))
        strip, photometric, compression = buf.getvalue(), 6, 7
        if metadata_in == "preview" and strip[2:4] == b"\xff\xe0":  # EXIF first, as a camera writes its JPEGs
            strip = strip[:2] + strip[4 + int.from_bytes(strip[4:6], "big") :]
    else:
        strip, photometric, compression = thumb.tobytes(), 2, 1
    strip_at = tiff.place(strip)
    return {
        256: (_LONG, thumb.width),
        257: (_LONG, thumb.height),
        258: (_SHORT, (8, 8, 8)),
        259: (_SHORT, compression),
        262: (_SHORT, photometric),
        273: (_LONG, strip_at),
        277: (_SHORT, 3),
        278: (_LONG, thumb.height),
        279: (_LONG, len(strip)),
        284: (_SHORT, 1),
    }


def write_dng(
    path: str | os.PathLike[str],
    image: Image.Image,
    *,
    preview: int | None = 1024,
    jpeg_preview: bool = True,
    exif: Image.Exif | None = None,
    metadata_in: str = "raw",
) -> Path:
    """A minimal but real DNG 1.4 of ``image``: the picture mosaicked into a 12-bit RGGB Bayer raw (a SubIFD), IFD0 a
    preview of ``preview`` px on its long side (a baseline JPEG, or uncompressed RGB; none when None) with the
    orientation of ``exif``, and the capture time (``DateTimeOriginal``) and GPS position of ``exif``, the tags
    lookalike reads, in the RAW's own IFDs (``metadata_in="raw"``) or only in the JPEG preview's EXIF ("preview", as
    Fujifilm's RAF keeps them). No camera RAW can be had offline, so this is what LibRaw is tested on: it decodes it
    as any DNG (demosaic, embedded preview, orientation), the path every camera's RAW takes in lookalike.
    """
    import struct

    exif = exif if exif is not None else Image.Exif()
    tiff = _Tiff()
    raw_ifd_at = _raw_ifd(tiff, _bayer(image))
    tags: dict[int, tuple[int, Any]] = {
        254: (_LONG, 1),
        271: (_ASCII, "lookalike"),
        272: (_ASCII, "lookalike test DNG"),
        274: (_SHORT, int(exif.get(0x0112, 1))),
        330: (_LONG, raw_ifd_at),  # SubIFDs
        50706: (_BYTE, (1, 4, 0, 0)),  # DNGVersion
        50708: (_ASCII, "lookalike test DNG"),  # UniqueCameraModel
        50721: (_SRATIONAL, _XYZ_TO_SRGB),  # ColorMatrix1: the "sensor" sees linear sRGB
        50778: (_SHORT, 21),  # CalibrationIlluminant1: D65
        50728: (_RATIONAL, (1, 1, 1)),  # AsShotNeutral
    }
    if preview:
        tags.update(_preview_tags(tiff, image, preview, jpeg_preview, exif, metadata_in))
    else:
        tags.update({256: (_LONG, 8), 257: (_LONG, 8), 258: (_SHORT, 8), 262: (_SHORT, 1), 277: (_SHORT, 1)})
        tags.update({273: (_LONG, tiff.place(bytes(64))), 278: (_LONG, 8), 279: (_LONG, 64), 259: (_SHORT, 1)})
    for pointer, kept in ((0x8769, {0x9003: _ASCII}), (0x8825, {1: _ASCII, 2: _RATIONAL, 3: _ASCII, 4: _RATIONAL})):
        sub = exif.get_ifd(pointer) if metadata_in == "raw" else {}
        sub_tags = {
            tag: (kind, sub[tag].decode("ascii", "ignore").strip("\x00") if isinstance(sub[tag], bytes) else sub[tag])
            for tag, kind in kept.items()
            if tag in sub
        }
        if sub_tags:
            tags[pointer] = (_LONG, tiff.place_ifd(sub_tags))
    ifd0_at = tiff.place_ifd(tags)
    struct.pack_into("<I", tiff.out, 4, ifd0_at)
    path = Path(path)
    path.write_bytes(bytes(tiff.out))
    return path


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


# --- copies as photographers have them: camera originals and their exports, RAW+JPEG, edits ------------------------

EDITOR = "Adobe Photoshop Lightroom Classic 13.0 (Macintosh)"


def _camera_exif(when: str, make: str, model: str, software: str | None = None) -> Image.Exif:
    exif = photo_exif(time=when)
    exif[0x010F], exif[0x0110] = make, model
    if software:
        exif[0x0131] = software
    return exif


def _save(img: Image.Image, path: Path, kind: str, exif: Image.Exif, quality: int, mtime: float | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "heic":
        from lookalike.images.pillow import can_read

        can_read("heif")  # registers pillow-heif's opener and saver
    fmt = {"jpeg": "JPEG", "heic": "HEIF", "avif": "AVIF", "png": "PNG", "webp": "WEBP"}[kind]
    img.save(path, fmt, quality=quality, exif=exif.tobytes()) if fmt != "PNG" else img.save(path, exif=exif)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def write_format_group(
    img: Image.Image,
    out_dir: str | os.PathLike[str],
    stem: str,
    kind: str,
    *,
    when: str = "2024:05:01 10:00:00",
    rng: np.random.Generator | None = None,
    mtime: float = 1_714_557_600.0,
) -> dict[str, Any]:
    """One shot as a phone, a camera or an editor leaves it, under ``out_dir``: ``kind`` is

    - ``heic``: ``phone/<stem>.HEIC`` (the original) and ``exports/<stem>.jpg``, its JPEG export at quality 85–95,
      the bigger file (a typical phone export);
    - ``avif``: ``phone/<stem>.avif`` and ``exports/<stem>.jpg`` likewise;
    - ``dng``: ``camera/<stem>.dng`` and ``camera/<stem>.jpg``: RAW+JPEG siblings (one shot, two formats);
    - ``edited``: ``camera/<stem>.jpg`` and ``edits/<stem>-edit.jpg``, cropped 2% per side, the EXIF Software of
      Lightroom, the same capture time and a later mtime.

    Returns ``{"kind", "original", "copies", "siblings"}`` with names relative to ``out_dir`` (``siblings``: names
    that are one shot with the original, never copies)."""
    out, rng = Path(out_dir), rng or np.random.default_rng(0)
    img = img.convert("RGB")
    cam = {"heic": ("Apple", "iPhone 15"), "avif": ("Google", "Pixel 8")}.get(kind, ("Canon", "EOS R6"))
    exif = _camera_exif(when, *cam)
    if kind in ("heic", "avif"):
        original = _save(img, out / "phone" / f"{stem}.{'HEIC' if kind == 'heic' else 'avif'}", kind, exif, 60, mtime)
        quality = int(rng.integers(85, 96))
        export = _save(img, out / "exports" / f"{stem}.jpg", "jpeg", exif, quality, mtime + 3600)
        while export.stat().st_size <= original.stat().st_size and quality < 98:
            quality += 2
            export = _save(img, export, "jpeg", exif, quality, mtime + 3600)
        return {"kind": kind, "original": f"phone/{original.name}", "copies": [f"exports/{stem}.jpg"], "siblings": []}
    if kind == "dng":
        (out / "camera").mkdir(parents=True, exist_ok=True)
        write_dng(out / "camera" / f"{stem}.dng", img, exif=exif)
        os.utime(out / "camera" / f"{stem}.dng", (mtime, mtime))
        _save(img, out / "camera" / f"{stem}.jpg", "jpeg", exif, 92, mtime)
        return {"kind": kind, "original": f"camera/{stem}.dng", "copies": [], "siblings": [f"camera/{stem}.jpg"]}
    if kind == "edited":
        _save(img, out / "camera" / f"{stem}.jpg", "jpeg", exif, 92, mtime)
        w, h = img.size
        cut = img.crop((w // 50, h // 50, w - w // 50, h - h // 50))
        _save(cut, out / "edits" / f"{stem}-edit.jpg", "jpeg", _camera_exif(when, *cam, EDITOR), 92, mtime + 86400)
        return {"kind": kind, "original": f"camera/{stem}.jpg", "copies": [f"edits/{stem}-edit.jpg"], "siblings": []}
    raise ValueError(f"kind must be heic, avif, dng or edited, got {kind!r}")


# --- a HEIC with a depth map, as a phone's portrait mode writes it ------------------------------------------------
# pillow-heif writes no depth images, so the file is put together from two HEICs it writes: the photo's items as
# they are, plus the depth map's coded image as an auxiliary item ('auxl' reference, 'auxC' depth URN) of it.

_DEPTH_URN = b"urn:mpeg:hevc:2015:auxid:2\0"


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> dict[bytes, tuple[int, int]]:
    """Top-level boxes of ``data[start:end]``: type -> (payload start, box end)."""
    out, off, end = {}, start, len(data) if end is None else end
    while off < end:
        size, kind = int.from_bytes(data[off : off + 4], "big"), data[off + 4 : off + 8]
        head = 16 if size == 1 else 8
        size = int.from_bytes(data[off + 8 : off + 16], "big") if size == 1 else size or end - off
        out[kind] = (off + head, off + size)
        off += size
    return out


def _box(kind: bytes, payload: bytes, full: int | None = None) -> bytes:
    body = (full.to_bytes(4, "big") if full is not None else b"") + payload
    return (8 + len(body)).to_bytes(4, "big") + kind + body


def _heif_parts(data: bytes) -> dict[str, Any]:
    """The pieces of a one-image HEIC that pillow-heif wrote: its boxes, properties, associations and data."""
    top = _boxes(data)
    meta_at, meta_end = top[b"meta"]
    meta = _boxes(data, meta_at + 4, meta_end)
    iprp = _boxes(data, *meta[b"iprp"])
    ipco_at, ipco_end = iprp[b"ipco"]
    props, off = [], ipco_at
    while off < ipco_end:
        size = int.from_bytes(data[off : off + 4], "big")
        props.append(data[off : off + size])
        off += size
    ma, _ = iprp[b"ipma"]
    version, flags = data[ma], int.from_bytes(data[ma + 1 : ma + 4], "big")
    if version or flags & 1 or int.from_bytes(data[ma + 4 : ma + 8], "big") != 1:
        raise ValueError("expected one item with 8-bit property associations")
    count = data[ma + 10]
    assoc = list(data[ma + 11 : ma + 11 + count])
    la = meta[b"iloc"][0]
    sizes, base_size = data[la + 4], data[la + 5] >> 4
    if data[la] != 0 or sizes != 0x44 or int.from_bytes(data[la + 6 : la + 8], "big") != 1:
        raise ValueError("expected a version-0 iloc with 4-byte offsets and one item")
    at = la + 12 + base_size  # past the item's ID, data reference and base offset
    base = int.from_bytes(data[la + 12 : at], "big")
    extents = [
        (base + int.from_bytes(data[p : p + 4], "big"), int.from_bytes(data[p + 4 : p + 8], "big"))
        for p in range(at + 2, at + 2 + 8 * int.from_bytes(data[at : at + 2], "big"), 8)
    ]
    return {
        "ftyp": data[top[b"ftyp"][0] - 8 : top[b"ftyp"][1]],
        "hdlr": data[meta[b"hdlr"][0] - 8 : meta[b"hdlr"][1]],
        "pitm": data[meta[b"pitm"][0] - 8 : meta[b"pitm"][1]],
        "infe": data[meta[b"iinf"][0] + 6 : meta[b"iinf"][1]],
        "props": props,
        "assoc": assoc,
        "data": b"".join(data[o : o + n] for o, n in extents),
    }


def heic_with_depth(image: Image.Image, depth: Image.Image, quality: int = 80) -> bytes:
    """A HEIC holding ``image`` (RGB) as its primary image and ``depth`` (mode L, any size) as that image's depth
    map, an auxiliary image as iPhones write portrait photos (without EXIF: the file holds the two images only).
    Readers that know depth maps find it; others, and ``lookalike``, see the photo only."""
    from lookalike.images.pillow import can_read

    can_read("heif")  # registers pillow-heif's saver

    def encode(img: Image.Image) -> bytes:
        buf = io.BytesIO()
        img.save(buf, "HEIF", quality=quality)
        return buf.getvalue()

    rgb, grey = image.convert("RGB"), depth.convert("L")
    rgb.info, grey.info = {}, {}  # no EXIF or XMP item: the file has exactly two images, the photo and its map
    photo, dmap = _heif_parts(encode(rgb)), _heif_parts(encode(grey))
    keep = {b"hvcC", b"ispe", b"pixi"}
    depth_props = [p for p in dmap["props"] if p[4:8] in keep] + [_box(b"auxC", _DEPTH_URN, 0)]
    props = photo["props"] + depth_props
    first = len(photo["props"]) + 1  # property indices count from 1
    depth_assoc = [0x80 | first] + [first + i for i in range(1, len(depth_props) - 1)] + [0x80 | (len(props))]
    infe = _box(b"infe", (2).to_bytes(2, "big") + b"\0\0hvc1\0", 2 << 24)  # item 2, an HEVC image
    iinf = _box(b"iinf", (2).to_bytes(2, "big") + photo["infe"] + infe, 0)
    iref = _box(b"iref", _box(b"auxl", b"\0\x02\0\x01\0\x01"), 0)  # item 2 is auxiliary to item 1
    ipma = (2).to_bytes(4, "big")
    for item, assoc in ((1, photo["assoc"]), (2, depth_assoc)):
        ipma += item.to_bytes(2, "big") + bytes([len(assoc), *assoc])
    iprp = _box(b"iprp", _box(b"ipco", b"".join(props)) + _box(b"ipma", ipma, 0))

    def meta(offset: int) -> bytes:
        entries = b""
        for item, (at, size) in (
            (1, (offset, len(photo["data"]))),
            (2, (offset + len(photo["data"]), len(dmap["data"]))),
        ):
            entries += item.to_bytes(2, "big") + b"\0\0" + (1).to_bytes(2, "big") + at.to_bytes(4, "big")
            entries += size.to_bytes(4, "big")
        iloc = _box(b"iloc", bytes([0x44, 0]) + (2).to_bytes(2, "big") + entries, 0)
        return _box(b"meta", photo["hdlr"] + photo["pitm"] + iloc + iinf + iref + iprp, 0)

    head = len(photo["ftyp"]) + len(meta(0)) + 8  # the data starts after ftyp, meta and the mdat header
    mdat = _box(b"mdat", photo["data"] + dmap["data"])
    return photo["ftyp"] + meta(head) + mdat
