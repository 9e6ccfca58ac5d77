"""Finding image files and decoding them into model-sized RGB arrays, plus EXIF time and GPS.

Decoding is where an indexer spends its CPU besides the model, so it is done once per file from bytes already read
(the same bytes are hashed for change detection), JPEGs are decoded in draft mode at the smallest DCT scale that still
covers the model's input, and every Pillow mode is brought to 8-bit RGB.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from lookalike.config import folder_label
from lookalike.errors import ImageError, LookalikeError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
MIN_SIDE = 16
"""Images smaller than this on either side carry no usable content for a 224 px model; they are refused."""

# Truncated files must fail, not silently decode to grey: a half-written upload would otherwise pollute the index.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_DATETIME_ORIGINAL = 0x9003
_DATETIME = 0x0132


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def find_images(root: str | os.PathLike[str], *, exclude: Sequence[str | os.PathLike[str]] = ()) -> list[Path]:
    """All image files below ``root``, sorted, skipping hidden folders (the index lives in ``.lookalike``) and the
    folders in ``exclude`` (an index folder placed anywhere under the root is never indexed as photos)."""
    root = Path(root)
    if not root.exists():
        raise LookalikeError(f"folder not found: {root}")
    if root.is_file():
        return [root] if is_image_path(root) else []
    skip = {Path(p).resolve() for p in exclude}
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (not skip or (Path(dirpath) / d).resolve() not in skip)
        )
        for name in filenames:
            if not name.startswith(".") and is_image_path(Path(name)):
                found.append(Path(dirpath) / name)
    found.sort()
    return found


def labelled_files(root: str | os.PathLike[str], *, what: str = "images") -> list[tuple[Path, str]]:
    """(file, class) for every image in ``root/<class>/...``, by the one label rule (:func:`lookalike.config.
    folder_label`: the first folder under the root, nested folders included); files directly in ``root`` have no
    class and are left out. ``what`` names the folder's role in the error when there is nothing labelled."""
    root = Path(root)
    if not root.is_dir():
        raise LookalikeError(f"not a folder: {root}")
    out = []
    for p in find_images(root):
        label = folder_label(p.relative_to(root).as_posix())
        if label is not None:
            out.append((p, label))
    if not out:
        raise LookalikeError(
            f"no labelled {what} in {root}: put them in one sub-folder per class (e.g. {root}/Kitchen/a.jpg)"
        )
    return out


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass
class ImageMeta:
    """What is known of an image file besides its pixels."""

    width: int
    height: int
    exif_time: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None


def _open(data: bytes, name: str) -> Image.Image:
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.size  # noqa: B018 - forces header parsing inside the guarded block
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{name}: too many pixels for a safe decode (limit {Image.MAX_IMAGE_PIXELS:,} px); downscale it first"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: unreadable image ({exc})") from None
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{name}: image too small ({w}×{h} px; need at least {MIN_SIDE} px on each side)")
    return img


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


def decode(data: bytes, name: str = "image", target: int | None = None) -> tuple[Image.Image, ImageMeta]:
    """Decode bytes into an upright RGB image no smaller than ``target`` on its short side (when given).

    ``meta.width``/``meta.height`` are the original, upright dimensions, not the draft-decoded ones.
    """
    img = _open(data, name)
    meta = read_meta(img)
    try:
        if target and img.format == "JPEG":
            # draft() picks the largest DCT reduction (1/2, 1/4, 1/8) that keeps both sides >= the requested size.
            w, h = img.size
            scale = target / min(w, h)
            if scale < 1:
                img.draft("RGB", (max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5))))
        img = ImageOps.exif_transpose(img)
        img = _to_rgb(img)
        img.load()
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None
    return img, meta


def read_file(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def load_image(path: str | os.PathLike[str], target: int | None = None) -> Image.Image:
    return decode(read_file(path), str(path), target)[0]


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


# --- EXIF -------------------------------------------------------------------------------------------------------


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


def _exif_time(exif: Image.Exif) -> str | None:
    raw = None
    try:
        raw = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    except Exception:
        return None
    if not raw:
        return None
    text = raw.decode("ascii", "ignore") if isinstance(raw, bytes) else str(raw)
    text = text.strip("\x00 ").strip()
    try:
        return datetime.strptime(text, "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None


def read_meta(img: Image.Image) -> ImageMeta:
    """Upright size, capture time and GPS position; malformed EXIF yields None fields, never an error."""
    w, h = img.size
    exif_time = lat = lon = None
    try:
        exif = img.getexif()
    except Exception:
        exif = None
    if exif:
        if exif.get(0x0112) in (5, 6, 7, 8):  # orientation rotates by 90°: report upright size
            w, h = h, w
        exif_time = _exif_time(exif)
        try:
            lat, lon = gps_from_exif(dict(exif.get_ifd(_GPS_IFD)))
        except Exception:
            lat = lon = None
    return ImageMeta(width=w, height=h, exif_time=exif_time, gps_lat=lat, gps_lon=lon)


def bundled_photos() -> dict[str, Path]:
    """Real photos that lookalike's dependencies ship (scikit-learn: a temple, a flower; matplotlib: a portrait, a
    product shot): the sample data of the demo and tests, and the calibration set of last resort for int8."""
    import matplotlib
    import sklearn

    sk = Path(sklearn.__file__).parent / "datasets" / "images"
    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    found = {
        "temple": sk / "china.jpg",
        "flower": sk / "flower.jpg",
        "portrait": mpl / "grace_hopper.jpg",
        "package": mpl / "Minduka_Present_Blue_Pack.png",
    }
    return {k: v for k, v in found.items() if v.is_file()}


def iter_chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
