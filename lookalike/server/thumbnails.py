"""Pictures the server makes of indexed and uploaded images: cached JPEG thumbnails and the upload's preview."""

from __future__ import annotations

import base64
import io
import logging
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from lookalike.images import load_image
from lookalike.io import atomic_write
from lookalike.store import THUMBNAILS_DIR

log = logging.getLogger("lookalike.server")

THUMB_SIZE = 256


class ThumbnailCache:
    """JPEG thumbnails by image id: an in-memory LRU in front of files under ``<index>/thumbnails``.

    Disk files are named by the image's content hash, so an image changed and re-indexed gets a fresh thumbnail and a
    stale one is never served; a read-only index folder just means no disk cache.
    """

    def __init__(
        self, folder: Path, paths: list[Path], hashes: list[str], size: int = THUMB_SIZE, capacity: int = 2048
    ) -> None:
        self.paths = paths
        self.hashes = hashes
        self.size = size
        self.capacity = capacity
        self.folder: Path | None = folder / THUMBNAILS_DIR / str(size)
        self._lru: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, image_id: int) -> bytes:
        with self._lock:
            data = self._lru.get(image_id)
            if data is not None:
                self._lru.move_to_end(image_id)
                return data
        data = self._from_disk(image_id) or self._make(image_id)
        with self._lock:
            self._lru[image_id] = data
            while len(self._lru) > self.capacity:
                self._lru.popitem(last=False)
        return data

    def _disk_path(self, image_id: int) -> Path | None:
        return self.folder / f"{self.hashes[image_id]}.jpg" if self.folder else None

    def _from_disk(self, image_id: int) -> bytes | None:
        path = self._disk_path(image_id)
        try:
            return path.read_bytes() if path else None
        except OSError:
            return None

    def _make(self, image_id: int) -> bytes:
        img = load_image(self.paths[image_id], target=self.size)
        img.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85, optimize=True)
        data = buf.getvalue()
        path = self._disk_path(image_id)
        if path is not None:
            try:
                atomic_write(path, data)
            except OSError as exc:
                log.warning("thumbnail disk cache disabled (%s)", exc)
                self.folder = None
        return data


def preview_url(img: Image.Image, size: int = 256) -> str:
    """The uploaded query as a small JPEG data URL: a browser cannot show HEIC or a camera RAW itself, so the page
    shows the picture as the server decoded it (upright, as it was embedded)."""
    small = img.copy()
    small.thumbnail((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
