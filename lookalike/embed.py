"""Images -> vectors: decode in a thread pool while the model runs, so both cores stay busy.

A :class:`Describer` is model + resolution + pooling (+ any post-transform such as PCA-whitening). An index stores
its describer's config and rebuilds the same describer for queries, so a query is always described exactly as the
indexed images were.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.aggregate import (
    PCA_FILE,
    VOCAB_FILE,
    PCAWhitening,
    Pooling,
    VLADPooling,
    l2_normalize,
    make_pooling,
    read_vocabulary,
    valid_cells,
)
from lookalike.config import CALIBRATION_SOURCES, DEFAULT_POOLING, IndexConfig
from lookalike.errors import ConfigError, ImageError
from lookalike.images import ImageMeta, bundled_photos, content_hash, decode, letterbox, load_image, read_file
from lookalike.io import atomic_write
from lookalike.models.base import Backbone, cache_dir
from lookalike.models.quantize import INT8_FILE, MAX_CALIBRATION_IMAGES, MIN_CALIBRATION_IMAGES, weight_bits

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """One file after reading and decoding, ready for the model (or why it is not)."""

    path: Path
    hash: str | None = None
    pixels: np.ndarray | None = None
    valid: tuple[int, int] = (0, 0)
    meta: ImageMeta | None = None
    error: str | None = None
    unchanged: bool = False  # content hash equals the one already indexed: reuse its vector
    extra: Any = None


@dataclass
class Batch:
    items: list[Prepared]
    vectors: np.ndarray  # rows for the items with pixels, in order
    described: list[Prepared] = field(default_factory=list)


class Describer:
    """Model + resolution + pooling (+ optional post-transform): the one way lookalike turns pixels into vectors."""

    def __init__(
        self,
        model: Backbone,
        pooling: Pooling,
        resolution: int | None = None,
        post: Any | None = None,
        *,
        decode_at: int | None = None,
    ) -> None:
        self.model = model
        self.pooling = pooling
        self.resolution = int(resolution or model.default_resolution)
        if self.resolution % model.stride:
            self.resolution = max(model.stride, round(self.resolution / model.stride) * model.stride)
        self.post = post
        # an index that makes local features while indexing (IndexConfig.features) decodes every photo at that size
        # once and shrinks it for the model; its queries are decoded the same way, so a photo meets its own vector
        self.decode_size = max(self.resolution, int(decode_at or 0))

    @classmethod
    def from_config(
        cls, config: IndexConfig, *, folder: str | os.PathLike[str] | None = None, runtime: str = "auto"
    ) -> Describer:
        """The one place a describer is built: index, queries, vocabulary fitting, scenes, training and the Ray
        workers all come here, so a vector means the same thing wherever it was made.

        ``folder`` is an index folder whose fitted state (VLAD vocabulary, PCA-whitening) is loaded; without one, a
        VLAD pooling takes ``config.vocab`` or stays unfitted until a vocabulary is fitted. A model without a
        stated pooling gets the one it advertises (a trained projection head asks for mean: GeM would clip its
        negative components), else GeM.
        """
        from lookalike.models import create_model
        from lookalike.models.registry import default_precision, takes_weights

        kwargs: dict[str, Any] = {"runtime": runtime, **config.model_options}
        precision = config.precision or default_precision(config.model, runtime)
        if precision != "fp32":
            kwargs["precision"] = precision
        if config.weights:
            if not takes_weights(config.model):
                raise ConfigError(f"weights applies to hub models only, not {config.model}", setting="weights")
            kwargs["weights"] = str(Path(config.weights).resolve())
        backbone = create_model(config.model, **kwargs)
        pooling = make_pooling(config.pooling or getattr(backbone, "default_pooling", None) or DEFAULT_POOLING)
        post = None
        if isinstance(pooling, VLADPooling):
            if folder is not None and (Path(folder) / VOCAB_FILE).is_file():
                pooling.load(folder)
            elif config.vocab is not None:
                centres, _ = read_vocabulary(config.vocab)
                pooling.clusters = int(centres.shape[0])  # a given vocabulary's cluster count wins
                pooling.load(config.vocab)
        if config.pca and folder is not None and (Path(folder) / PCA_FILE).is_file():
            post = PCAWhitening(int(config.pca)).load(folder)
        if precision == "int8" and folder is not None and (Path(folder) / INT8_FILE).is_file():
            backbone.load_int8(Path(folder) / INT8_FILE)  # type: ignore[attr-defined]
        return cls(backbone, pooling, config.resolution, post=post, decode_at=config.features)

    @property
    def dim(self) -> int:
        d = self.pooling.output_dim(self.model.feature_dim)
        return int(self.post.output_dim(d)) if self.post is not None else d

    def config(self) -> dict[str, Any]:
        cfg = {"model": self.model.config(), "pooling": self.pooling.config(), "resolution": self.resolution}
        if self.post is not None:
            cfg["post"] = self.post.config()
        return cfg

    # --- int8 ---------------------------------------------------------------------------------------------------

    @property
    def precision(self) -> str:
        """What the backbone runs at; torch-only backbones have no int8."""
        return getattr(self.model, "precision", "fp32")

    @property
    def needs_calibration(self) -> bool:
        """An int8 describer whose quantized model is not made or loaded yet (it would run fp32 meanwhile)."""
        return self.precision == "int8" and not getattr(self.model, "int8_ready", True)

    def calibrate(
        self,
        paths: Sequence[Path],
        out: str | os.PathLike[str],
        *,
        source: str = "samples",
        max_images: int = MAX_CALIBRATION_IMAGES,
        seed: int = 0,
    ) -> str:
        """Make this describer's int8 model, write it to ``out`` (an index folder's copy) and run it from now on.
        Returns what it was calibrated on, for the user.

        ``source`` "samples" (the default) takes the quantization calibrated once on the bundled sample photos and
        cached for this machine: EfficientNet-Lite's ReLU6 bounds most activation ranges whatever the photos, so
        calibrating on 64 of the user's photos gave the same vectors (median cosine to fp32 0.9943 against 0.9941 on 192
        room photos) for 10 s more per new index (BENCHMARKS.md "quantize"). "photos" calibrates on a random
        sample of ``paths`` instead (for photos unlike any sample, e.g. thermal or scanned documents); with fewer
        than ``MIN_CALIBRATION_IMAGES`` usable ones the ranges would follow a handful of photos, so the bundled
        samples are used, and the returned sentence says so.
        """
        if source not in CALIBRATION_SOURCES:
            raise ConfigError(
                f"calibration must be one of {', '.join(CALIBRATION_SOURCES)}, got {source!r}", setting="calibration"
            )
        if source == "samples":
            cached = self.samples_int8()
            atomic_write(out, lambda tmp: shutil.copyfile(cached, tmp))
            self.model.load_int8(out)  # type: ignore[attr-defined]
            return "int8 calibrated on the bundled sample photos (cached for this machine)"
        paths = list(paths)
        order = np.random.default_rng(seed).permutation(len(paths))[: 4 * max_images]
        pixels: list[np.ndarray] = []
        tried = 0
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="calibrate") as pool:
            while len(pixels) < max_images and tried < len(order):  # top up for files that cannot be read
                take = [paths[i] for i in order[tried : tried + max_images - len(pixels)]]
                tried += len(take)
                pixels += [item.pixels for item in pool.map(self.prepare_file, take) if item.pixels is not None]
        if len(pixels) >= MIN_CALIBRATION_IMAGES:
            note = f"int8 calibrated on {len(pixels)} of the images"
        else:
            note = (
                f"only {len(pixels)} usable image(s) to calibrate int8 on (at least {MIN_CALIBRATION_IMAGES} needed): "
                "calibrated on the bundled sample photos instead"
            )
            pixels = self._bundled_calibration_pixels()
        log.info("%s", note)
        self.model.quantize((np.stack(b) for b in _chunks(pixels, 8)), out)  # type: ignore[attr-defined]
        return note

    def _bundled_calibration_pixels(self) -> list[np.ndarray]:
        """The bundled photos, each whole and as five crops (quadrants and centre): 24 varied calibration images."""
        out = []
        for path in bundled_photos().values():
            img = load_image(path)
            w, h = img.size
            boxes = [(0, 0, w, h), (0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h)]
            boxes += [(w // 2, h // 2, w, h), (w // 4, h // 4, 3 * w // 4, 3 * h // 4)]
            out += [self.prepare_image(img.crop(b))[0] for b in boxes]
        if len(out) < MIN_CALIBRATION_IMAGES:
            raise ConfigError(
                "int8 needs calibration images and the bundled sample photos are missing", setting="precision"
            )
        return out

    @property
    def samples_int8_path(self) -> Path:
        """Where this machine keeps the int8 model calibrated on the bundled photos at this resolution: beside the fp32
        export, whose name carries the weights' hash."""
        onnx_path: Path = self.model.export_onnx()  # type: ignore[attr-defined]
        # 7-bit weights on CPUs without VNNI (models/quantize.py) get their own name: a cache shared with a VNNI
        # machine, or made before the distinction, never hands over a model that saturates here
        bits = "" if weight_bits() == 8 else f"w{weight_bits()}"
        return cache_dir() / "onnx" / f"{onnx_path.stem}-int8{bits}-samples-{self.resolution}.onnx"

    def samples_int8(self) -> Path:
        """The int8 model calibrated on the bundled photos at this resolution, made once per machine (10 s at 320 px
        on two cores)."""
        cached = self.samples_int8_path
        if not cached.is_file():
            log.info("calibrating int8 on the bundled sample photos at %d px (once for this machine)", self.resolution)
            self.model.quantize(  # type: ignore[attr-defined]
                (np.stack(b) for b in _chunks(self._bundled_calibration_pixels(), 8)), cached
            )
        return cached

    def ensure_int8(self) -> None:
        """An int8 describer with no index folder (a query batch, a scene, an evaluation) runs the cached
        samples-calibrated model."""
        if self.needs_calibration:
            self.model.load_int8(self.samples_int8())  # type: ignore[attr-defined]

    # --- describing -----------------------------------------------------------------------------------------------

    def features(self, pixels: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dense features and each image's valid feature cells."""
        if self.needs_calibration:
            self.ensure_int8()
        feats = self.model.features(pixels)
        return feats, valid_cells(valid, self.model.stride, feats.shape[2], feats.shape[3])

    def describe_arrays(self, pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
        feats, cells = self.features(pixels, valid)
        vectors = self.pooling.transform(feats, cells)
        if self.post is not None:
            vectors = l2_normalize(self.post.transform(vectors))
        return vectors.astype(np.float32)

    def prepare_image(self, img: Image.Image) -> tuple[np.ndarray, tuple[int, int]]:
        return letterbox(img, self.resolution)

    def describe_images(self, images: Sequence[Image.Image], batch_size: int = 8) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            prepared = [self.prepare_image(img) for img in images[start : start + batch_size]]
            pixels = np.stack([p for p, _ in prepared])
            valid = np.array([v for _, v in prepared])
            out.append(self.describe_arrays(pixels, valid))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def prepare_file(
        self,
        path: Path,
        known_hash: str | Collection[str] | None = None,
        also: Callable[[Image.Image], Any] | None = None,
    ) -> Prepared:
        """Read, hash and decode one file; ``known_hash`` (one hash, or several: the content of files that moved)
        matching its bytes means its vector is already indexed, and it is not decoded. ``also`` is given the decoded
        photo before it is shrunk for the model (the build's local features), its result kept as ``extra``: one
        read and one decode serve both."""
        try:
            data = read_file(path)
            digest = content_hash(data)
            known = (known_hash,) if isinstance(known_hash, str) else known_hash
            if known is not None and digest in known:
                return Prepared(path, hash=digest, unchanged=True)
            img, meta = decode(data, str(path), target=self.decode_size)
            extra = also(img) if also is not None else None
            pixels, valid = self.prepare_image(img)
            return Prepared(path, hash=digest, pixels=pixels, valid=valid, meta=meta, extra=extra)
        except ImageError as exc:
            return Prepared(path, error=str(exc).removeprefix(f"{path}: "))
        except MemoryError:
            return Prepared(path, error="out of memory while decoding")

    def describe_files(
        self,
        paths: Iterable[Path],
        *,
        known_hashes: Callable[[Path], str | Collection[str] | None] | None = None,
        batch_size: int = 8,
        workers: int | None = None,
        also: Callable[[Image.Image], Any] | None = None,
    ) -> Iterator[Batch]:
        """Yield batches in input order; decoding runs ``workers`` files ahead of the model in a thread pool
        (``also``: see :meth:`prepare_file`; it runs in those threads too).

        Pillow releases the GIL while decoding and ONNX Runtime while computing, so threads give real overlap
        without the cost of pickling pixels between processes.
        """
        workers = workers or min(4, os.cpu_count() or 1)
        lookahead = max(2 * batch_size, 4 * workers)
        it = iter(paths)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
            pending: deque[Future[Prepared]] = deque()

            def fill() -> None:
                while len(pending) < lookahead:
                    try:
                        p = next(it)
                    except StopIteration:
                        return
                    known = known_hashes(p) if known_hashes else None
                    pending.append(pool.submit(self.prepare_file, p, known, also))

            fill()
            while pending:
                items: list[Prepared] = []
                ready: list[Prepared] = []
                while pending and len(ready) < batch_size:
                    item = pending.popleft().result()
                    fill()
                    items.append(item)
                    if item.pixels is not None:
                        ready.append(item)
                if ready:
                    pixels = np.stack([r.pixels for r in ready])
                    valid = np.array([r.valid for r in ready])
                    vectors = self.describe_arrays(pixels, valid)
                    for r in ready:
                        r.pixels = None  # free memory as soon as the batch is described
                else:
                    vectors = np.zeros((0, self.dim), np.float32)
                yield Batch(items=items, vectors=vectors, described=ready)


def _chunks(items: list[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
