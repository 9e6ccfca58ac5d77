"""Decoding bytes into upright 8-bit RGB at the size the model needs: the one entry point, whatever the format.

Decoding is where an indexer spends its CPU besides the model, so it is done once per file from bytes already read
(the same bytes are hashed for change detection), JPEGs are decoded in draft mode at the smallest DCT scale that
still covers the model's input, and every Pillow mode is brought to 8-bit RGB; HEIC, AVIF and RAW have their own
openers, registered on first need.
"""

from __future__ import annotations

import os

from PIL import Image

from lookalike.images.exif import ImageMeta
from lookalike.images.files import read_file
from lookalike.images.pillow import _decode_pillow, sniff
from lookalike.images.raw import decode_raw


def decode(data: bytes, name: str = "image", target: int | None = None) -> tuple[Image.Image, ImageMeta]:
    """Decode bytes into an upright RGB image no smaller than ``target`` on its short side (when given).

    ``meta.width``/``meta.height`` are the original, upright dimensions, not the draft-decoded ones. HEIC/HEIF and
    AVIF come through Pillow's openers (pillow-heif, Pillow's AVIF plugin) and so take exactly the JPEG path below;
    camera RAWs go to :func:`decode_raw`.
    """
    if data and sniff(data, name) == "raw":
        return decode_raw(data, name, target)
    return _decode_pillow(data, name, target)


def load_image(path: str | os.PathLike[str], target: int | None = None) -> Image.Image:
    return decode(read_file(path), str(path), target)[0]
