"""Local features: RootSIFT keypoints of each indexed image, extracted once and cached in the index folder.

A global vector says two photos *look* alike; only local features that agree geometrically say they show the same
thing (hloc's retrieval → matching → verification). SIFT needs no downloaded weights and is robust to the scale
and viewpoint changes of photos taken walking round a building; RootSIFT (Arandjelović & Zisserman 2012: L1-
normalise, square-root) makes Euclidean matching compare descriptors by the Hellinger kernel, which matches better
at no cost.

Storage: ``features/<content hash>.npz`` per image (keypoint positions as float32, raw SIFT descriptors as uint8,
the strongest first, plus the image size) and ``features/conf.json`` with the settings that made them. Keyed by
content hash, so moving or touching a file keeps its features, a changed file gets new ones, and files whose hash is
no longer indexed are dropped (:meth:`FeatureCache.prune`). A file that does not load is recomputed, never trusted.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from lookalike.config import FEATURES_RESOLUTION
from lookalike.errors import ConfigError, ImageError, LookalikeError
from lookalike.images import decode, read_file
from lookalike.io import atomic_write, atomic_write_json
from lookalike.progress import bar
from lookalike.store import FEATURES_DIR

if TYPE_CHECKING:
    from PIL import Image

    from lookalike.store import Store

CONF_FILE = "conf.json"
DECODERS = ("pillow", "reduced")
MIN_KEYPOINTS = 50
"""An image with fewer keypoints (blank, flat, tiny) cannot be verified either way: its pairs are "unknown"."""


@dataclass(frozen=True)
class FeatureConf:
    """What makes an image's local features; stored beside them so a change recomputes instead of mixing."""

    max_keypoints: int = 2048
    resolution: int = FEATURES_RESOLUTION  # long side, in pixels, SIFT runs on
    # how photos become grey pixels: "pillow" (draft-mode RGB, to grey, bilinear resize: every index so far) or
    # "reduced" (JPEGs decoded straight to grey at libjpeg-turbo's reduced scale by OpenCV, area resize; other
    # formats as "pillow"). Different pixels, so a stored setting like the others.
    decode: str = "pillow"

    def __post_init__(self) -> None:
        if self.decode not in DECODERS:
            raise ConfigError(f"decode must be one of {', '.join(DECODERS)}, got {self.decode!r}", setting="decode")
        if self.max_keypoints < 8:
            raise ConfigError(f"max_keypoints must be at least 8, got {self.max_keypoints}", setting="max_keypoints")
        if self.resolution < 64:
            raise ConfigError(f"resolution must be at least 64 px, got {self.resolution}", setting="resolution")

    def to_dict(self) -> dict[str, Any]:
        d = {"method": "rootsift", **asdict(self)}
        if self.decode == "pillow":  # the settings every existing index stored: its conf.json and pack stay valid
            del d["decode"]
        return d


@dataclass
class Features:
    """One image's keypoints, strongest first: ``xy`` (n, 2) float32 pixels at the extraction scale, ``sift`` (n,
    128) uint8 raw SIFT, ``size`` (width, height) of the image SIFT saw."""

    xy: np.ndarray
    sift: np.ndarray
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.xy)

    @property
    def usable(self) -> bool:
        return len(self) >= MIN_KEYPOINTS

    def rootsift(self, limit: int | None = None) -> np.ndarray:
        """L2-unit RootSIFT of the strongest ``limit`` keypoints (all by default), float32."""
        d = self.sift[:limit].astype(np.float32)
        d /= d.sum(axis=1, keepdims=True) + 1e-7
        return np.sqrt(d, out=d)

    def nbytes(self) -> int:
        return int(self.xy.nbytes + self.sift.nbytes)

    def to_bytes(self) -> bytes:
        """An ``.npz`` (what :func:`numpy.savez` writes, readable by :func:`numpy.load`) with fixed time stamps, so
        the same features give the same bytes wherever and whenever they are made (a Ray worker's equal a local
        run's)."""
        buf = io.BytesIO()
        arrays = {"xy": self.xy, "sift": self.sift, "size": np.asarray(self.size, np.int32)}
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for name, arr in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with z.open(info, "w") as fh:
                    np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)
        return buf.getvalue()

    @classmethod
    def load(cls, path: Path | io.BytesIO) -> Features:
        with np.load(path, allow_pickle=False) as z:
            xy, sift, size = z["xy"], z["sift"], z["size"]
        if (
            xy.ndim != 2
            or xy.shape[1] != 2
            or sift.shape != (len(xy), 128)
            or sift.dtype != np.uint8
            or size.shape != (2,)
        ):
            raise ValueError("arrays of the wrong shape")
        if not np.isfinite(xy).all():
            raise ValueError("non-finite keypoint positions")
        return cls(xy.astype(np.float32, copy=False), sift, (int(size[0]), int(size[1])))


def grey_array(image: Image.Image, resolution: int) -> tuple[np.ndarray, float]:
    """8-bit grey pixels with the long side at most ``resolution``, and the factor from original to these pixels."""
    from PIL import Image as PILImage

    grey = image.convert("L")
    w, h = grey.size
    scale = min(1.0, resolution / max(w, h))
    if scale < 1:
        grey = grey.resize((max(1, round(w * scale)), max(1, round(h * scale))), PILImage.Resampling.BILINEAR)
    return np.asarray(grey), scale


def extract(image: Image.Image | np.ndarray, conf: FeatureConf | None = None) -> Features:
    """SIFT keypoints of one image (a PIL image, or 8-bit grey pixels already at the wanted scale)."""
    import cv2

    conf = conf or FeatureConf()
    pixels = image if isinstance(image, np.ndarray) else grey_array(image, conf.resolution)[0]
    sift = cv2.SIFT_create(nfeatures=conf.max_keypoints)
    keypoints, desc = sift.detectAndCompute(np.ascontiguousarray(pixels, np.uint8), None)
    h, w = pixels.shape[:2]
    if desc is None or not keypoints:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), (w, h))
    response = np.array([k.response for k in keypoints], np.float32)
    order = np.argsort(-response, kind="stable")[: conf.max_keypoints]
    xy = np.array([k.pt for k in keypoints], np.float32)[order]
    # OpenCV's SIFT descriptors are integers 0..255 stored as float: uint8 is exact and a quarter of the size.
    sift_u8 = np.clip(np.rint(desc[order]), 0, 255).astype(np.uint8)
    return Features(xy, sift_u8, (w, h))


def features_of_file(path: Path, name: str, conf: FeatureConf) -> tuple[Features | None, str | None]:
    """One photo's features, or why it could not be read: what every engine runs per photo."""
    try:
        data = read_file(path)
        grey = reduced_grey(data, conf.resolution) if conf.decode == "reduced" else None
        if grey is not None:
            return extract(grey, conf), None
        img, _ = decode(data, name, target=conf.resolution)
    except ImageError as exc:
        return None, str(exc)
    return extract(img, conf), None


def reduced_grey(data: bytes, resolution: int) -> np.ndarray | None:
    """A JPEG's upright grey pixels, long side at most ``resolution``: decoded by libjpeg-turbo (OpenCV) straight
    to grey at the smallest DCT scale (1/2, 1/4, 1/8) still covering ``resolution``, then area-resized. None for
    anything else (other formats, JPEGs OpenCV cannot read), which then takes the Pillow path."""
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    import cv2
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(data)) as probe:  # reads the header only
            long_side = max(probe.size)
    except (OSError, ValueError, PILImage.DecompressionBombError):
        return None
    flags = {8: cv2.IMREAD_REDUCED_GRAYSCALE_8, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2}
    factor = next((f for f in (8, 4, 2) if long_side / f >= resolution), 1)
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), flags.get(factor, cv2.IMREAD_GRAYSCALE))
    if grey is None or grey.size == 0:
        return None
    h, w = grey.shape[:2]
    scale = resolution / max(w, h)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return grey


def extract_files(items: Sequence[tuple[int, str, str]], conf: dict[str, Any]) -> list[tuple[int, bytes | None, str]]:
    """Features of ``(id, path, name)`` items as the bytes of their files (or None and the reason): the unit of work
    a remote engine runs, on one core, with plain arguments and results."""
    import cv2

    cv2.setNumThreads(1)
    fc = FeatureConf(int(conf["max_keypoints"]), int(conf["resolution"]), str(conf.get("decode", "pillow")))
    out = []
    for i, path, name in items:
        feats, error = features_of_file(Path(path), name, fc)
        out.append((i, None if feats is None else feats.to_bytes(), error or ""))
    return out


class FeatureEngine(Protocol):
    """Somewhere else to run extraction and verification (``lookalike.distributed.RayFeatureEngine``): the same
    functions (:func:`extract_files`, :func:`lookalike.verify.pairs.verify_files`) on other cores or machines."""

    def extract(
        self, items: Sequence[tuple[int, str, str]], conf: FeatureConf
    ) -> Iterator[list[tuple[int, bytes | None, str]]]: ...

    def verify(
        self, batches: Sequence[list[tuple[int, int, int]]], files: dict[int, str], conf: dict[str, Any]
    ) -> Iterator[tuple[list[tuple[int, str, int, int]], dict[int, int]]]: ...


class FeatureCache:
    """The local features of an index's images: computed on demand for the images a step needs, kept on disk.

    ``conf`` None follows the features already stored (or the defaults when there are none); a different conf
    than the stored one recomputes everything, since features of two recipes cannot be matched with each other.
    """

    def __init__(
        self, store: Store, conf: FeatureConf | None = None, *, memory: int = 256, engine: FeatureEngine | None = None
    ) -> None:
        self.store = store
        self.engine = engine  # None: extract and verify on this machine's threads
        self.folder = store.path / FEATURES_DIR
        stored = self._stored_conf()
        self.conf = conf or stored or FeatureConf()
        self._stale_conf = stored is not None and stored != self.conf
        self._memory = memory
        self._loaded: OrderedDict[str, Features] = OrderedDict()
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self.notes: list[str] = []
        self.failed: dict[int, str] = {}
        self._hashes: list[str] | None = None
        self.counts: dict[int, int] = {}  # keypoints of every image got so far (which ones were too flat to verify)
        self._packs: dict[int, FeaturePack | None] = {}
        self._packs_checked: dict[int, int] = {}  # limit -> index size when the pack was last found fresh enough

    @classmethod
    def while_indexing(cls, store: Store) -> FeatureCache | None:
        """Where an index that makes local features while indexing (``IndexConfig.features``) keeps them: the
        stored recipe (or the defaults) at the index's feature size, decoded as the vectors are (Pillow, draft mode);
        None for an index without the setting."""
        size = store.config.features
        if not size:
            return None
        return cls(store, replace(cls(store).conf, resolution=size, decode="pillow"))

    def _stored_conf(self) -> FeatureConf | None:
        path = self.folder / CONF_FILE
        if not path.is_file():
            return None
        try:
            d = json.loads(path.read_text())
            return FeatureConf(int(d["max_keypoints"]), int(d["resolution"]), str(d.get("decode", "pillow")))
        except (OSError, ValueError, KeyError, TypeError, ConfigError):
            return None  # unreadable: treated as absent, and rewritten

    @property
    def hashes(self) -> list[str]:
        if self._hashes is None or len(self._hashes) != len(self.store):
            self._hashes = self.store.column("hash")
        return self._hashes

    def file_of(self, digest: str) -> Path:
        return self.folder / f"{digest}.npz"

    def missing(self, ids: Sequence[int] | None = None) -> list[int]:
        """Ids whose features are not on disk (all of them when the stored conf differs from this cache's)."""
        hashes = self.hashes
        ids = range(len(hashes)) if ids is None else ids
        if self._stale_conf:
            return sorted(set(ids))
        ids = set(ids)
        if len(ids) < 1000:  # a search's few candidates: one stat each, not a listing of every cached file
            return sorted(i for i in ids if not self.file_of(hashes[i]).is_file())
        present = {p.stem for p in self.folder.glob("*.npz")} if self.folder.is_dir() else set()
        return sorted(i for i in ids if hashes[i] not in present)

    def ensure(self, ids: Sequence[int] | None = None, *, workers: int | None = None, progress: bool = False) -> int:
        """Compute and store the features of ``ids`` (all images by default) that are not cached; returns how many
        were computed. Images that cannot be read are recorded in ``failed`` and left uncached (retried next time)."""
        todo = self.missing(ids)
        self.begin()
        if not todo:
            return 0
        if self.engine is not None:
            return self._ensure_on(self.engine, todo, progress)
        import cv2

        root, names, hashes = self.store.root, self.store.column("path"), self.hashes
        workers = max(1, workers or min(4, os.cpu_count() or 1))

        def one(i: int) -> tuple[int, Features | None, str | None]:
            return i, *features_of_file(root / names[i], names[i], self.conf)

        previous = cv2.getNumThreads()
        cv2.setNumThreads(1)  # one image per thread; OpenCV's own threads would only compete with ours
        done = 0
        try:
            with (
                bar("local features", len(todo), progress) as tick,
                ThreadPoolExecutor(workers) as pool,
            ):
                for i, feats, error in pool.map(one, todo):
                    if feats is None:
                        self.failed[i] = error or "unreadable"
                    else:
                        self.put(hashes[i], feats)
                        done += 1
                    tick.advance()
        finally:
            cv2.setNumThreads(previous)
        if self.failed:
            self.notes.append(
                f"{len(self.failed)} image(s) could not be read for local features; their pairs are unknown"
            )
        return done

    def begin(self) -> None:
        """Ready to store features of this cache's recipe: features of another recipe dropped, the recipe written."""
        if self._stale_conf:
            self.notes.append("local features were made with other settings; recomputing them")
            self.clear()
            self._stale_conf = False
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / CONF_FILE).is_file() or self._stored_conf() != self.conf:
            atomic_write_json(self.folder / CONF_FILE, self.conf.to_dict())

    def put(self, digest: str, feats: Features) -> None:
        """Store the features of the image whose content hash is ``digest`` (made elsewhere: while indexing)."""
        atomic_write(self.file_of(digest), feats.to_bytes())
        self._remember(digest, feats)

    def _ensure_on(self, engine: FeatureEngine, todo: list[int], progress: bool) -> int:
        """:meth:`ensure` on another engine: it returns each file's bytes, written here as a local run writes them."""
        root, names, hashes = self.store.root, self.store.column("path"), self.hashes
        items = [(i, str(root / names[i]), names[i]) for i in todo]
        done = 0
        with bar("local features", len(todo), progress) as tick:
            for chunk in engine.extract(items, self.conf):
                for i, data, error in chunk:
                    if data is None:
                        self.failed[i] = error or "unreadable"
                    else:
                        atomic_write(self.file_of(hashes[i]), data)
                        done += 1
                    tick.advance()
        if self.failed:
            self.notes.append(
                f"{len(self.failed)} image(s) could not be read for local features; their pairs are unknown"
            )
        return done

    @contextlib.contextmanager
    def using(self, engine: FeatureEngine | None) -> Iterator[None]:
        """Extract and verify on ``engine`` inside the block, then on this machine's threads again."""
        self.engine = engine
        try:
            yield
        finally:
            self.engine = None

    def clear(self) -> None:
        if self.folder.is_dir():
            for p in [*self.folder.glob("*.npz"), *self.folder.glob("pack-*")]:
                p.unlink(missing_ok=True)
        self._loaded.clear()
        self._packs.clear()
        self._packs_checked.clear()

    def prune(self) -> int:
        """Drop the features of images no longer indexed (deleted, or changed and so re-hashed)."""
        if not self.folder.is_dir():
            return 0
        keep = set(self.hashes)
        dropped = 0
        for p in self.folder.glob("*.npz"):
            if p.stem not in keep:
                p.unlink(missing_ok=True)
                dropped += 1
        return dropped

    def _remember(self, digest: str, feats: Features) -> None:
        with self._lock:
            self._loaded[digest] = feats
            self._loaded.move_to_end(digest)
            while len(self._loaded) > self._memory:
                self._loaded.popitem(last=False)

    def get(self, i: int) -> Features | None:
        """The features of image ``i``, or None if they could not be computed (then its pairs are unknown).

        A file that does not load (truncated, overwritten, wrong arrays) is recomputed on the spot."""
        digest = self.hashes[i]
        with self._lock:
            if digest in self._loaded:
                self._loaded.move_to_end(digest)
                self.counts[i] = len(self._loaded[digest])
                return self._loaded[digest]
        if i in self.failed:
            return None
        path = self.file_of(digest)
        try:
            feats = Features.load(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            if path.is_file():
                self.notes.append(f"{path.name}: unreadable local features ({exc}); recomputed")
                with contextlib.suppress(OSError):
                    path.unlink()
            self.ensure([i])
            if i in self.failed:
                return None
            with self._lock:
                feats = self._loaded.get(digest)
            if feats is None:
                raise LookalikeError(f"local features of {self.store.column('path')[i]} could not be stored") from None
        self._remember(digest, feats)
        self.counts[i] = len(feats)
        return feats

    def pack(self, limit: int, *, build: bool = True, stale: float = 0.1) -> FeaturePack | None:
        """The strongest ``limit`` keypoints of every cached image, memory-mapped from one file set (re-ranking's
        store: reading 100 small files per query cost as much as verifying them). Built from the per-image files
        when missing, made with other settings, unreadable, or lacking more than ``stale`` of the images that have
        features now (images added since are read from their own files meanwhile); None when ``build`` is False
        and no usable pack exists, or when nothing is cached."""
        hashes = self.hashes
        with self._lock:
            current = self._packs.get(limit)
            if current is not None and self._packs_checked.get(limit) == len(hashes):
                return current
        if current is None:
            current = FeaturePack.open(self.folder, limit, self.conf)
        if current is not None and not self._stale_conf:
            have = {p.stem for p in self.folder.glob("*.npz")} & set(hashes)
            if sum(1 for h in have if h not in current.rows) <= stale * len(have):
                with self._lock:
                    self._packs[limit] = current
                    self._packs_checked[limit] = len(hashes)
                return current
        if not build or self._stale_conf:
            return None
        with self._build_lock:  # two searches at once (the server's threads) build it once, not into each other
            with self._lock:
                if self._packs_checked.get(limit) == len(hashes):
                    return self._packs.get(limit)
            made = FeaturePack.build(self, limit)
            with self._lock:
                self._packs[limit] = made
                self._packs_checked[limit] = len(hashes)
        return made

    def unusable(self) -> list[int]:
        """Ids got so far that cannot be verified: unreadable, or fewer than ``MIN_KEYPOINTS`` keypoints."""
        return sorted({i for i, c in self.counts.items() if c < MIN_KEYPOINTS} | set(self.failed))

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.npz")) if self.folder.is_dir() else 0


PACK_FILES = ("sift", "xy", "count", "size")


def _npy_writer(path: Path, shape: tuple[int, ...], dtype: type) -> Any:
    """An open ``.npy`` file with its header written, for the caller to append the C-order rows to."""
    fh = open(path, "wb")  # noqa: SIM115 (closed by the caller, after the rows)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(fh, header)
    return fh


class FeaturePack:
    """The strongest ``limit`` keypoints of many images in fixed-size rows of memory-mapped arrays
    (``features/pack-<limit>-{sift,xy,count,size}.npy`` plus ``pack-<limit>.json`` naming the content hash of each
    row and the settings): a row is a slice, read from the page cache, not a file to open and unzip. At 512
    keypoints a row is 68 KiB (64 KiB of uint8 SIFT, 4 KiB of positions). The JSON is written last, so a pack
    whose arrays were cut short by a crash has no (or an older, mismatching) index and is rebuilt."""

    def __init__(self, limit: int, hashes: list[str], arrays: dict[str, np.ndarray]) -> None:
        self.limit = limit
        self.rows = {h: r for r, h in enumerate(hashes)}
        self.sift, self.xy = arrays["sift"], arrays["xy"]
        self.count, self.size = arrays["count"], arrays["size"]

    def __len__(self) -> int:
        return len(self.rows)

    @staticmethod
    def paths(folder: Path, limit: int) -> tuple[Path, dict[str, Path]]:
        return folder / f"pack-{limit}.json", {k: folder / f"pack-{limit}-{k}.npy" for k in PACK_FILES}

    @classmethod
    def open(cls, folder: Path, limit: int, conf: FeatureConf) -> FeaturePack | None:
        """The pack on disk, or None when there is none or it does not match (settings, shapes, row count)."""
        index, files = cls.paths(folder, limit)
        try:
            meta = json.loads(index.read_text())
            if meta.get("conf") != conf.to_dict() or meta.get("limit") != limit:
                return None
            hashes = [str(h) for h in meta["hashes"]]
            arrays = {k: np.load(p, mmap_mode="r", allow_pickle=False) for k, p in files.items()}
        except (OSError, ValueError, KeyError, TypeError):
            return None
        n = len(hashes)
        shapes = {"sift": (n, limit, 128), "xy": (n, limit, 2), "count": (n,), "size": (n, 2)}
        if any(arrays[k].shape != shape for k, shape in shapes.items()) or arrays["sift"].dtype != np.uint8:
            return None
        return cls(limit, hashes, arrays)

    @classmethod
    def build(cls, cache: FeatureCache, limit: int) -> FeaturePack | None:
        """Pack every image that has a readable features file (one pass over them)."""
        folder = cache.folder
        hashes = sorted({h for h in cache.hashes if cache.file_of(h).is_file()})
        if not hashes:
            return None
        index, files = cls.paths(folder, limit)
        index.unlink(missing_ok=True)  # the arrays are about to change: no index may point at them meanwhile
        n = len(hashes)
        tmp = {k: files[k].with_name(f"{files[k].name}.{os.getpid()}.tmp") for k in PACK_FILES}
        # The big arrays are written row by row through plain file writes, not a writable memory map: a map's
        # dirty pages stayed in the process's memory until it ended (0.8 GB more at 11,300 photos, growing).
        rows = {"sift": ((limit, 128), np.uint8), "xy": ((limit, 2), np.float32)}
        out = {k: _npy_writer(tmp[k], (n, *shape), dtype) for k, (shape, dtype) in rows.items()}
        count, size = np.zeros(n, np.int32), np.zeros((n, 2), np.int32)
        kept: list[str] = []
        try:
            for h in hashes:
                try:
                    f = Features.load(cache.file_of(h))
                except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                    continue  # unreadable: left out of the pack; FeatureCache.get recomputes it when asked
                c = min(len(f), limit)
                for k, part in (("sift", f.sift), ("xy", f.xy)):
                    row = np.zeros(*rows[k])
                    row[:c] = part[:c]
                    out[k].write(row.tobytes())
                count[len(kept)], size[len(kept)] = c, f.size
                kept.append(h)
            for k, (shape, dtype) in rows.items():  # rows past len(kept) (unreadable files) stay zero and unnamed
                out[k].write(bytes((n - len(kept)) * int(np.prod(shape)) * np.dtype(dtype).itemsize))
        finally:
            for fh in out.values():
                fh.close()
        for k, a in (("count", count), ("size", size)):
            with open(tmp[k], "wb") as fh:
                np.save(fh, a)
        for k in PACK_FILES:
            os.replace(tmp[k], files[k])
        atomic_write_json(
            index, {"limit": limit, "conf": cache.conf.to_dict(), "hashes": kept + [""] * (n - len(kept))}
        )
        return cls.open(folder, limit, cache.conf)

    def features(self, digest: str) -> Features | None:
        """The packed keypoints of one image (views into the memory map), or None when it is not packed."""
        r = self.rows.get(digest)
        if r is None or not digest:
            return None
        c = int(self.count[r])
        w, h = (int(v) for v in self.size[r])
        return Features(self.xy[r, :c], self.sift[r, :c], (w, h))
