"""Finding image files and decoding them into model-sized RGB arrays, plus EXIF time and GPS.

Decoding is where an indexer spends its CPU besides the model, so it is done once per file from bytes already read
(the same bytes are hashed for change detection), JPEGs are decoded in draft mode at the smallest DCT scale that still
covers the model's input, and every Pillow mode is brought to 8-bit RGB.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import struct
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from lookalike.config import folder_label
from lookalike.errors import ImageError, LookalikeError
from lookalike.io import written_by_lookalike

HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
"""What iPhones (since iOS 11) and many Android phones save: HEVC stills in a HEIF container, through pillow-heif."""
AVIF_EXTENSIONS = frozenset({".avif"})
"""AV1 stills in a HEIF container, through Pillow's own AVIF plugin (or pillow-avif-plugin on an older Pillow)."""
RAW_EXTENSIONS = frozenset(
    {".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2", ".rwl", ".pef"}
    | {".srw", ".x3f", ".3fr", ".fff", ".iiq", ".erf", ".kdc", ".dcr", ".mrw", ".mos", ".mef"}
)
"""Camera RAW files LibRaw decodes (through rawpy); many are TIFF inside, so the extension decides, not Pillow."""
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"} | HEIF_EXTENSIONS | AVIF_EXTENSIONS | RAW_EXTENSIONS
)
"""The one set of extensions discovery takes as images (any case); every other file is counted as ignored."""
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

_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_DATETIME_ORIGINAL = 0x9003
_DATETIME = 0x0132


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


_KINDS = {
    stat.S_IFIFO: "named pipe",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFDIR: "folder",
}


def _not_regular(mode: int) -> str | None:
    """Why a file of this mode must not be opened (a pipe's read blocks until a writer comes, a device's never
    ends), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return f"not a regular file ({_KINDS.get(stat.S_IFMT(mode), 'special file')})"


def _stat_error(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if exc.errno == errno.ENOENT:
        return "dangling symbolic link (its target is missing)" if path.is_symlink() else "cannot read (no such file)"
    return f"cannot read ({exc.strerror or exc})"


def usable(path: str | os.PathLike[str]) -> tuple[os.stat_result | None, str | None]:
    """``(stat, None)`` for a regular file (through symbolic links), else ``(None, why)``; never opens the file."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        return None, _stat_error(path, exc)
    reason = _not_regular(st.st_mode)
    return (None, reason) if reason else (st, None)


@dataclass
class Discovery:
    """Everything a walk of a photo folder saw, so a run can account for each entry.

    ``files`` are regular image files (with ``stats``: size, mtime_ns), ``skipped`` image-named entries that are
    not (dangling links, pipes, loops: never opened), ``ignored`` the other files counted by extension, and
    ``left_out`` folders lookalike wrote itself (exports, reports, index folders), which hold copies, not photos.
    """

    root: Path
    files: list[Path] = field(default_factory=list)
    stats: dict[Path, tuple[int, int]] = field(default_factory=dict)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    left_out: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def seen(self) -> int:
        """Image-named entries found: usable files plus skipped ones."""
        return len(self.files) + len(self.skipped)


def discover(root: str | os.PathLike[str], *, exclude: Sequence[str | os.PathLike[str]] = ()) -> Discovery:
    """Walk ``root`` the one way every command does (index, evaluate, train, the Ray engine).

    Hidden folders are not entered (the index lives in ``.lookalike``), nor symbolic links to folders (no loops),
    nor folders in ``exclude`` or written by lookalike (:func:`lookalike.io.written_by_lookalike`). Every image-named
    entry is ``stat``-ed, never opened: only regular files are returned. Sorted by path.
    """
    root = Path(root)
    found = Discovery(root)
    if not root.exists() and not root.is_symlink():
        raise LookalikeError(f"folder not found: {root}")
    if not root.is_dir():
        st, reason = usable(root)
        if not is_image_path(root):
            found.ignored[root.suffix.lower() or "(no extension)"] += 1
        elif st is None:
            found.skipped.append((root, reason or "unusable"))
        else:
            found.files.append(root)
            found.stats[root] = (st.st_size, st.st_mtime_ns)
        return found
    skip = {Path(p).resolve() for p in exclude}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            sub = here / d
            why = "this index's folder" if skip and sub.resolve() in skip else written_by_lookalike(sub)
            if why:
                found.left_out.append((sub, why))
            else:
                keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            if name.startswith("."):
                continue
            p = here / name
            if not is_image_path(p):
                found.ignored[p.suffix.lower() or "(no extension)"] += 1
                continue
            st, reason = usable(p)
            if st is None:
                found.skipped.append((p, reason or "unusable"))
            else:
                found.files.append(p)
                found.stats[p] = (st.st_size, st.st_mtime_ns)
    found.files.sort()
    found.skipped.sort()
    found.left_out.sort()
    return found


def find_images(root: str | os.PathLike[str], *, exclude: Sequence[str | os.PathLike[str]] = ()) -> list[Path]:
    """The regular image files below ``root``, sorted (:func:`discover` without the accounting)."""
    return discover(root, exclude=exclude).files


def labelled_files(root: str | os.PathLike[str], *, what: str = "images") -> list[tuple[Path, str]]:
    """(file, class) for every image in ``root/<class>/...``, by the one label rule (:func:`lookalike.config.
    folder_label`: the first folder under the root, nested folders included); files directly in ``root`` have no
    class and are left out. ``what`` names the folder's role in the error when there is nothing labelled."""
    root = Path(root)
    if not root.is_dir():
        raise LookalikeError(f"not a folder: {root}")
    out = []
    found = discover(root)
    # entries that are no usable files go along so the caller's reader reports them (read_file refuses them unopened)
    for p in sorted([*found.files, *(q for q, _ in found.skipped)]):
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


# --- decoders beyond Pillow's own -------------------------------------------------------------------------------


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
    except (
        OSError,
        ValueError,
        SyntaxError,
        RuntimeError,
        EOFError,
        struct.error,
        IndexError,
        KeyError,
        TypeError,
    ) as exc:
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


def decode(data: bytes, name: str = "image", target: int | None = None) -> tuple[Image.Image, ImageMeta]:
    """Decode bytes into an upright RGB image no smaller than ``target`` on its short side (when given).

    ``meta.width``/``meta.height`` are the original, upright dimensions, not the draft-decoded ones. HEIC/HEIF and
    AVIF come through Pillow's openers (pillow-heif, Pillow's AVIF plugin) and so take exactly the JPEG path below;
    camera RAWs go to :func:`decode_raw`.
    """
    if data and sniff(data, name) == "raw":
        return decode_raw(data, name, target)
    return _decode_pillow(data, name, target)


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
    except (
        OSError,
        ValueError,
        SyntaxError,
        RuntimeError,
        EOFError,
        struct.error,
        Image.DecompressionBombError,
    ) as exc:
        # EOFError: pillow-heif on a truncated HEIC at load() (found by bench/fuzz.py from the HEIC seeds)
        raise ImageError(f"{name}: corrupt or truncated image ({_reason(exc)})") from None
    return img, meta


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


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file; anything else (a pipe, a device, a dangling link) is refused without being
    opened, so reading cannot block forever. The open is non-blocking and re-checked, in case the file was swapped
    for a pipe after the check."""
    _, reason = usable(path)
    if reason:
        raise ImageError(f"{path}: {reason}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImageError(f"{path}: {_stat_error(Path(path), exc)}") from None
    with os.fdopen(fd, "rb") as fh:
        reason = _not_regular(os.fstat(fd).st_mode)
        if reason:
            raise ImageError(f"{path}: {reason}")
        try:
            return fh.read()
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
