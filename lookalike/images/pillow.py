"""Pillow's side of decoding: sniffing the format, the size policy, draft-mode JPEG, modes to upright 8-bit RGB.

Decoding is where an indexer spends its CPU besides the model, so it is done once per file from bytes already read
(the same bytes are hashed for change detection), JPEGs are decoded in draft mode at the smallest DCT scale that
still covers the model's input, and every Pillow mode is brought to 8-bit RGB; HEIC, AVIF and RAW have their own
openers, registered on first need.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from lookalike.errors import ImageError
from lookalike.images.exif import ImageMeta, read_meta
from lookalike.images.files import RAW_EXTENSIONS

MIN_SIDE = 16


"""Images smaller than this on either side carry no usable content for a 224 px model; they are refused."""


# Truncated files must fail, not silently decode to grey: a half-written upload would otherwise pollute the index.
ImageFile.LOAD_TRUNCATED_IMAGES = False


MAX_PIXELS = 89_478_485


"""Formats decoded in full (PNG, TIFF, WebP, BMP, HEIC, AVIF, RAW ...): Pillow's own bomb limit (1024·1024·1024 / 4 /
3). A 40-byte PNG can claim 100,000² pixels; above this it is refused before any pixel is decoded."""


MAX_JPEG_PIXELS = 2**28


"""JPEGs (268 Mpx, e.g. 20,000 × 13,400): a 100–200 Mpx photo from a phone or medium-format camera is a normal
photo, and JPEG's DCT lets it decode at 1/2, 1/4 or 1/8 scale without ever holding the full image, so these are
allowed up to here and always decoded at most :data:`MAX_PIXELS` large."""


# What Pillow and its plugins raise on bytes that are not a whole, valid image (a truncated HEIC raises EOFError at
# load(), found by bench/fuzz.py); each is turned into one ImageError line.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    RuntimeError,
    EOFError,
    struct.error,
)


def _register_heif() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _register_avif() -> bool:
    from PIL import features

    if features.check("avif"):
        return True
    try:
        import pillow_avif  # noqa: F401 - registers itself with Pillow on import
    except ImportError:
        return False
    return True


_OPENERS = {"heif": _register_heif, "avif": _register_avif}


READABLE: dict[str, bool] = {}


"""Which of the container formats Pillow can open here, found the first time a file of that kind comes (registering
pillow-heif took about 35 ms of every command's start-up); a file of one it cannot open gets a one-line message
naming the package that reads it."""


def can_read(kind: str) -> bool:
    """Whether Pillow opens ``kind`` ("heif", "avif") here, registering its opener the first time it is asked."""
    if kind not in READABLE:
        READABLE[kind] = _OPENERS[kind]()
    return READABLE[kind]


_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})


_MISSING = {
    "heif": "HEIC/HEIF photos need the pillow-heif package (pip install pillow-heif)",
    "avif": "AVIF photos need Pillow built with AVIF (Pillow >= 11.3) or the pillow-avif-plugin package",
    "raw": "camera RAW photos need the rawpy package (pip install rawpy)",
}


def sniff(data: bytes, name: str = "") -> str | None:
    """ "heif", "avif" or "raw" when the bytes (or, for RAWs that are TIFF inside, the file name) say so; None for
    everything Pillow reads on its own. Decides the decoder, and names the missing package when one is absent."""
    if data[4:8] == b"ftyp":
        size = int.from_bytes(data[:4], "big")
        brands = {data[8:12]} | {data[i : i + 4] for i in range(16, min(max(size, 16), 64), 4)}
        if b"crx " in brands:  # Canon CR3 is an ISO media file too
            return "raw"
        if brands & {b"avif", b"avis"}:
            return "avif"
        if brands & _HEIF_BRANDS:
            return "heif"
    head = data[:16]
    if head.startswith((b"FUJIFILMCCD-RAW", b"IIRO", b"IIRS", b"MMOR", b"IIU\x00", b"FOVb")):  # RAF ORF RW2 X3F
        return "raw"
    if head[:4] in (b"II*\x00", b"MM\x00*") and head[8:10] == b"CR":  # Canon CR2
        return "raw"
    if Path(name).suffix.lower() in RAW_EXTENSIONS:
        return "raw"
    return None


def size_policy(img: Image.Image, name: str) -> float:
    """The one image-size rule for index, upload, scenes and dedupe: refuse what is too large, else return the
    largest decode scale allowed (1, or 1/2, 1/4, 1/8 for a JPEG over :data:`MAX_PIXELS`, applied by draft mode)."""
    w, h = img.size
    jpeg = img.format in ("JPEG", "MPO")
    limit = MAX_JPEG_PIXELS if jpeg else MAX_PIXELS
    if w * h > limit:
        kind = "JPEG" if jpeg else f"{img.format or 'image'} (JPEGs may have up to {MAX_JPEG_PIXELS:,})"
        raise ImageError(
            f"{name}: too many pixels for a safe decode ({w}×{h} = {w * h:,} px; the limit for a {kind} is "
            f"{limit:,} px); downscale it first"
        )
    scale = 1.0
    while w * h * scale * scale > MAX_PIXELS:
        scale /= 2
    return scale


def _open(data: bytes, name: str) -> tuple[Image.Image, float]:
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        if data[:3] == b"\xff\xd8\xff":
            # Pillow's open-time bomb check would refuse a 200 Mpx JPEG that draft mode decodes cheaply; the plugin
            # reads only the header, and size_policy applies the JPEG limit instead.
            from PIL import JpegImagePlugin

            img = JpegImagePlugin.jpeg_factory(io.BytesIO(data))
        else:
            kind = sniff(data, name)
            if kind in _OPENERS:
                can_read(kind)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # size_policy decides
                img = Image.open(io.BytesIO(data))
        img.size  # noqa: B018 - forces header parsing inside the guarded block
    except Image.DecompressionBombError:
        raise ImageError(
            f"{name}: too many pixels for a safe decode (the limit is {MAX_PIXELS:,} px, {MAX_JPEG_PIXELS:,} for a "
            "JPEG); downscale it first"
        ) from None
    except UnidentifiedImageError:
        kind = sniff(data, name)
        if kind in _OPENERS and not can_read(kind):
            raise ImageError(f"{name}: {_MISSING[kind]}") from None
        raise ImageError(f"{name}: not an image Pillow can read") from None
    except (*_DECODE_ERRORS, IndexError, KeyError, TypeError) as exc:  # opening also parses headers
        raise ImageError(f"{name}: unreadable image ({_reason(exc)})") from None
    scale = size_policy(img, name)
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{name}: image too small ({w}×{h} px; need at least {MIN_SIDE} px on each side)")
    return img, scale


def _reason(exc: BaseException) -> str:
    """A decoder's complaint on one line (libheif's end with a newline; a message must stay one line)."""
    args = [a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in exc.args]  # LibRaw's are bytes
    return " ".join(" ".join(args).split()) or type(exc).__name__


def _check_size(size: tuple[int, int], name: str) -> None:
    w, h = size
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{name}: image too small ({w}×{h} px; need at least {MIN_SIDE} px on each side)")
    if w * h > MAX_PIXELS:
        raise ImageError(f"{name}: too many pixels for a safe decode (limit {MAX_PIXELS:,} px); downscale it first")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # fmt: skip


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation. Not ``ImageOps.exif_transpose``: it also re-writes the EXIF block, and fuzzing
    found malformed tags that make that raise TypeError, AttributeError or struct.error; a malformed orientation is
    ignored like malformed GPS."""
    try:
        orientation = img.getexif().get(0x0112)
    except Exception:
        return img
    method = _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    return img.transpose(method) if method is not None else img


def _decode_pillow(data: bytes, name: str, target: int | None) -> tuple[Image.Image, ImageMeta]:
    img, limit = _open(data, name)
    meta = read_meta(img)
    try:
        if img.format in ("JPEG", "MPO"):
            # draft() picks the largest DCT reduction (1/2, 1/4, 1/8) that keeps both sides >= the requested size.
            w, h = img.size
            scale = min(limit, target / min(w, h) if target else 1.0)
            if scale < 1:
                img.draft("RGB", (max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5))))
        img = _upright(img)
        img = _to_rgb(img)
        img.load()
    except ImageError:
        raise
    except (*_DECODE_ERRORS, TypeError, Image.DecompressionBombError) as exc:
        # EOFError: pillow-heif on a truncated HEIC at load() (found by bench/fuzz.py from the HEIC seeds);
        # TypeError: a TIFF whose strip offset is a rational, which Pillow seeks to at load() (bench/fuzz.py)
        raise ImageError(f"{name}: corrupt or truncated image ({_reason(exc)})") from None
    return img, meta


def letterbox(img: Image.Image, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Fit the image inside ``size``×``size`` keeping its aspect ratio; pad bottom/right with mid-grey.

    Mid-grey (127) is zero after the model's normalisation, so padding adds nothing to the features, and the valid
    (height, width) returned lets pooling ignore the padded cells. Square inputs are a plain resize.
    """
    w, h = img.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=2.0)
    arr = np.asarray(img, dtype=np.uint8)
    if (nw, nh) == (size, size):
        return arr, (nh, nw)
    canvas = np.full((size, size, 3), 127, dtype=np.uint8)
    canvas[:nh, :nw] = arr
    return canvas, (nh, nw)
