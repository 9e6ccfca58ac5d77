"""Camera RAW through LibRaw: demosaic or the embedded preview, orientation, and metadata from the RAW's own IFDs."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
from PIL import Image

from lookalike.errors import ImageError
from lookalike.images.exif import _DATETIME_ORIGINAL, ImageMeta, _meta_from_exif, _parse_time, gps_from_exif, read_meta
from lookalike.images.pillow import _MISSING, _check_size, _decode_pillow, _open, _reason, _to_rgb

# LibRaw's flip (0, 3, 5, 6) as the transpose that makes a preview upright; postprocess() applies it itself.
_RAW_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


def decode_raw(data: bytes, name: str = "image", target: int | None = None) -> tuple[Image.Image, ImageMeta]:
    """A camera RAW as an upright RGB image: the embedded JPEG preview when its short side covers ``target`` (no
    demosaicing: a few ms), else LibRaw's half-size demosaic (one RGB pixel per 2×2 Bayer block, camera white
    balance). Without ``target`` a preview must cover the half-size demosaic to be used. Capture time and GPS come
    from the RAW's own EXIF (TIFF-based RAWs, CR3's metadata boxes) or else from the preview's."""
    try:
        import rawpy
    except ImportError:
        raise ImageError(f"{name}: {_MISSING['raw']}") from None
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            w, h = (sizes.height, sizes.width) if sizes.flip in (5, 6) else (sizes.width, sizes.height)
            _check_size((w, h), name)
            need = target or min(w, h) // 2
            img = preview_meta = None
            try:
                thumb = raw.extract_thumb()
            except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
                thumb = None
            if thumb is not None:
                img, preview_meta = _raw_preview(thumb, rawpy.ThumbFormat.JPEG, name, need, target, sizes.flip)
            if img is None:
                rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
                if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:  # found by fuzzing: (1, 1, 1)
                    raise ImageError(f"{name}: not a RAW photo LibRaw can read (it gave pixels of shape {rgb.shape})")
                img = Image.fromarray(rgb)
    except ImageError:
        raise
    except (rawpy.LibRawError, rawpy.NotSupportedError, OSError, ValueError) as exc:
        raise ImageError(f"{name}: not a RAW photo LibRaw can read ({_reason(exc)})") from None
    meta = raw_meta(data) or preview_meta or ImageMeta(w, h)
    meta.width, meta.height = w, h
    if not (meta.exif_time or meta.gps_lat is not None) and preview_meta:
        meta.exif_time, meta.gps_lat, meta.gps_lon = preview_meta.exif_time, preview_meta.gps_lat, preview_meta.gps_lon
    return _to_rgb(img), meta


def _raw_preview(
    thumb: Any, jpeg: Any, name: str, need: int, target: int | None, flip: int
) -> tuple[Image.Image | None, ImageMeta | None]:
    """The embedded preview, upright, when it is big enough; its EXIF either way (RAF previews carry all of it)."""
    try:
        if thumb.format == jpeg:
            img, _ = _open(thumb.data, name)
            meta = read_meta(img)
            if meta.exif_time == "1970-01-01T00:00:00":  # LibRaw's own EXIF header on a preview: time unknown
                meta.exif_time = None
            own = img.getexif().get(0x0112, 1)
            if min(img.size) < need:
                return None, meta
            decoded, _ = _decode_pillow(thumb.data, name, target)
            if own in (1, None):  # the preview's own orientation, when it has one, was applied by decode()
                decoded = decoded.transpose(_RAW_FLIP[flip]) if flip in _RAW_FLIP else decoded
            return decoded, meta
        pixels = np.asarray(thumb.data, dtype=np.uint8)
        if pixels.ndim != 3 or pixels.shape[2] != 3:  # found by fuzzing: a (1, 1, 1) bitmap preview
            return None, None
        img = Image.fromarray(pixels)
        if min(img.size) < need:
            return None, None
        return (img.transpose(_RAW_FLIP[flip]) if flip in _RAW_FLIP else img), None
    except ImageError:
        return None, None  # a broken preview is no reason to fail: the demosaic path still works


def raw_meta(data: bytes) -> ImageMeta | None:
    """Capture time and GPS from a RAW's own metadata: TIFF-structured RAWs (DNG, CR2, NEF, ARW, PEF, SRW; ORF and
    RW2 under their own magic) hold IFD0 with EXIF and GPS pointers; CR3 keeps the EXIF IFD in its CMT2 box and the
    GPS IFD in CMT4, each a little TIFF of its own."""
    try:
        if data[4:8] == b"ftyp":
            exif_ifd, gps_ifd = _cr3_box(data, b"CMT2"), _cr3_box(data, b"CMT4")
            if exif_ifd is None and gps_ifd is None:
                return None
            time = _parse_time((exif_ifd or {}).get(_DATETIME_ORIGINAL))
            lat, lon = gps_from_exif(dict(gps_ifd or {}))
            return ImageMeta(0, 0, exif_time=time, gps_lat=lat, gps_lon=lon)
        if data[:4] in (b"IIRO", b"IIRS", b"IIU\x00"):
            data = b"II*\x00" + data[4:]
        elif data[:4] == b"MMOR":
            data = b"MM\x00*" + data[4:]
        if data[:4] not in (b"II*\x00", b"MM\x00*"):
            return None
        exif = Image.Exif()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns of corrupt EXIF; here it just means no metadata
            exif.load(data)
            return _meta_from_exif(exif, 0, 0, rotate=False)
    except Exception:  # malformed metadata yields no metadata, never an error
        return None


def _cr3_box(data: bytes, kind: bytes) -> Image.Exif | None:
    at = data.find(kind, 0, 1 << 20)
    if at < 4:
        return None
    size = int.from_bytes(data[at - 4 : at], "big")
    exif = Image.Exif()
    exif.load(data[at + 4 : at - 4 + size])
    return exif
