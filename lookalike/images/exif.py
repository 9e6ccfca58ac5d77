"""What an image file says besides its pixels: EXIF capture time and GPS position; malformed EXIF yields None."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from PIL import Image

_EXIF_IFD = 0x8769


_GPS_IFD = 0x8825


_DATETIME_ORIGINAL = 0x9003


_DATETIME = 0x0132


@dataclass
class ImageMeta:
    """What is known of an image file besides its pixels."""

    width: int
    height: int
    exif_time: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None


def _ratio(value: object) -> float:
    if isinstance(value, tuple) and len(value) == 2:
        num, den = value
        return float(num) / float(den)
    return float(value)  # type: ignore[arg-type]


def _dms_to_degrees(dms: object, ref: object, limit: float) -> float | None:
    try:
        parts = [_ratio(v) for v in dms]  # type: ignore[union-attr]
        if len(parts) != 3:
            return None
        deg = parts[0] + parts[1] / 60.0 + parts[2] / 3600.0
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "ignore")
    ref = str(ref or "").strip().upper()[:1]
    if ref in ("S", "W"):
        deg = -deg
    if not np.isfinite(deg) or abs(deg) > limit:
        return None
    return round(deg, 8)


def gps_from_exif(gps: dict) -> tuple[float | None, float | None]:
    """Decimal degrees from an EXIF GPS IFD, or (None, None) when missing, malformed or out of range."""
    if not gps or 2 not in gps or 4 not in gps:
        return None, None
    lat = _dms_to_degrees(gps.get(2), gps.get(1), 90.0)
    lon = _dms_to_degrees(gps.get(4), gps.get(3), 180.0)
    if lat is None or lon is None:
        return None, None
    return lat, lon


def _parse_time(raw: object) -> str | None:
    if not raw:
        return None
    text = raw.decode("ascii", "ignore") if isinstance(raw, bytes) else str(raw)
    text = text.strip("\x00 ").strip()
    try:
        return datetime.strptime(text, "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None


def _exif_time(exif: Image.Exif) -> str | None:
    try:
        return _parse_time(exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME))
    except Exception:
        return None


def _meta_from_exif(exif: Image.Exif | None, w: int, h: int, *, rotate: bool = True) -> ImageMeta:
    exif_time = lat = lon = None
    if exif:
        if rotate and exif.get(0x0112) in (5, 6, 7, 8):  # orientation rotates by 90°: report upright size
            w, h = h, w
        exif_time = _exif_time(exif)
        try:
            lat, lon = gps_from_exif(dict(exif.get_ifd(_GPS_IFD)))
        except Exception:
            lat = lon = None
    return ImageMeta(width=w, height=h, exif_time=exif_time, gps_lat=lat, gps_lon=lon)


def read_meta(img: Image.Image) -> ImageMeta:
    """Upright size, capture time and GPS position; malformed EXIF yields None fields, never an error.

    HEIC/HEIF carry their rotation as transforms the decoder applies (pillow-heif then resets the EXIF orientation to
    1), AVIF through Pillow as EXIF orientation; either way the size reported here is the upright one."""
    try:
        exif = img.getexif()
    except Exception:
        exif = None
    return _meta_from_exif(exif, *img.size)
