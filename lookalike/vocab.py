"""Fitting VLAD vocabularies on a user's own images: a bounded random sample, so any collection size works.

AnyLoc's finding is that a vocabulary fitted to the domain (indoor rooms, aerial, ...) matters; fitting on the
images being indexed is the simplest way to get one. At most ``max_images`` images are described and at most
``max_descriptors`` local descriptors kept (spread evenly over the sampled images), so fitting costs the same on
a thousand photos as on a million, and never holds more than one sample in memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lookalike.aggregate import (
    Pooling,
    VLADPooling,
    local_descriptors,
    read_vocabulary,
)
from lookalike.embed import Describer
from lookalike.errors import IndexMismatchError, LookalikeError
from lookalike.progress import bar

MAX_IMAGES = 500
MAX_DESCRIPTORS = 100_000


def sample_local_descriptors(
    describer: Describer,
    paths: Sequence[Path],
    *,
    max_images: int = MAX_IMAGES,
    max_descriptors: int = MAX_DESCRIPTORS,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """(n, C) float32 local descriptors from a random subset of ``paths`` (unreadable files are passed over)."""
    rng = np.random.default_rng(seed)
    paths = list(paths)
    chosen = [paths[i] for i in sorted(rng.permutation(len(paths))[:max_images])]
    per_image = max(1, max_descriptors // max(1, len(chosen)))
    out: list[np.ndarray] = []
    workers = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool, bar("sampling", len(chosen), progress) as tick:
        for start in range(0, len(chosen), batch_size):
            prepared = [p for p in pool.map(describer.prepare_file, chosen[start : start + batch_size])]
            ready = [p for p in prepared if p.pixels is not None]
            tick.advance(len(prepared))
            if not ready:
                continue
            feats, cells = describer.features(np.stack([p.pixels for p in ready]), np.array([p.valid for p in ready]))
            for d in local_descriptors(feats, cells):
                if len(d) > per_image:
                    d = d[rng.choice(len(d), per_image, replace=False)]
                out.append(np.asarray(d, np.float32))
    if not out:
        raise LookalikeError("no readable images to fit a VLAD vocabulary on")
    return np.concatenate(out)[:max_descriptors]


def fit_vocabulary(
    describer: Describer,
    paths: Sequence[Path],
    *,
    max_images: int = MAX_IMAGES,
    max_descriptors: int = MAX_DESCRIPTORS,
    seed: int = 0,
    progress: bool = False,
) -> VLADPooling:
    """Fit ``describer.pooling`` (a VLAD pooling) on a sample of ``paths``, in place, and return it."""
    pooling = describer.pooling
    if not isinstance(pooling, VLADPooling):
        raise LookalikeError(f"only VLAD pooling has a vocabulary; this describer uses {pooling.name}")
    x = sample_local_descriptors(
        describer, paths, max_images=max_images, max_descriptors=max_descriptors, seed=seed, progress=progress
    )
    return pooling.fit(x, seed=seed)


# --- the vocabulary and PCA-whitening of an index folder (lookalike.build fits and keeps them) -------------


def check_same_vocabulary(pooling: Pooling, vocab: str | os.PathLike[str] | None, index_path: Path) -> None:
    """An existing index keeps its vocabulary; a different one asked for needs a rebuild (or ``vocab fit``)."""
    if vocab is None:
        return
    if not isinstance(pooling, VLADPooling):
        raise LookalikeError(f"{index_path} does not use VLAD pooling; a vocabulary needs vlad pooling and a rebuild")
    other = VLADPooling(read_vocabulary(vocab)[0].shape[0]).load(vocab)
    if other.vocab_hash() != pooling.vocab_hash():
        raise IndexMismatchError(
            f"{index_path} was built with another VLAD vocabulary than {vocab}; rebuild to re-describe everything "
            "with it"
        )
