"""Images in, pixels out: finding files (`files`), decoding any format into upright RGB (`decode`, with
Pillow's side in `pillow` and camera RAW in `raw`), and what EXIF says (`exif`). Import from here."""

from __future__ import annotations

from lookalike.images.decode import decode, load_image
from lookalike.images.exif import ImageMeta, gps_from_exif, read_meta
from lookalike.images.files import (
    AVIF_EXTENSIONS,
    HEIF_EXTENSIONS,
    IMAGE_EXTENSIONS,
    RAW_EXTENSIONS,
    Discovery,
    bundled_photos,
    content_hash,
    discover,
    find_images,
    is_image_path,
    iter_chunks,
    labelled_files,
    read_file,
    usable,
)
from lookalike.images.pillow import (
    MAX_JPEG_PIXELS,
    MAX_PIXELS,
    MIN_SIDE,
    READABLE,
    can_read,
    letterbox,
    size_policy,
    sniff,
)
from lookalike.images.raw import decode_raw, raw_meta

__all__ = [
    "AVIF_EXTENSIONS",
    "HEIF_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "MAX_JPEG_PIXELS",
    "MAX_PIXELS",
    "MIN_SIDE",
    "RAW_EXTENSIONS",
    "READABLE",
    "Discovery",
    "ImageMeta",
    "bundled_photos",
    "can_read",
    "content_hash",
    "decode",
    "decode_raw",
    "discover",
    "find_images",
    "gps_from_exif",
    "is_image_path",
    "iter_chunks",
    "labelled_files",
    "letterbox",
    "load_image",
    "raw_meta",
    "read_file",
    "read_meta",
    "size_policy",
    "sniff",
    "usable",
]
