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
import pyarrow as pa

from lookalike.aggregate import (
    VOCAB_FILE,
    PCAWhitening,
    Pooling,
    VLADPooling,
    l2_normalize,
    local_descriptors,
    read_vocabulary,
)
from lookalike.embed import Describer
from lookalike.errors import IndexMismatchError, LookalikeError
from lookalike.progress import bar
from lookalike.store import Store, vectors_to_arrow

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


# --- the vocabulary and PCA-whitening of an index folder (called by lookalike.index while it updates) -------------


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


def ensure_vocabulary(store: Store, describer: Describer, files: Sequence[Path], *, progress: bool = False) -> None:
    """Before embedding: fit the VLAD vocabulary if there is none, and keep it in the index folder."""
    pooling = describer.pooling
    if not isinstance(pooling, VLADPooling):
        return
    if pooling.needs_fit:
        if len(store):
            raise LookalikeError(
                f"{store.path} lost its VLAD vocabulary ({VOCAB_FILE}); run `lookalike vocab fit --index "
                f"{store.path}` to fit a new one and re-describe the images"
            )
        fit_vocabulary(describer, files, progress=progress)
        source = "fitted"
    elif store.meta.get("vocab", {}).get("hash") == pooling.vocab_hash() and (store.path / VOCAB_FILE).is_file():
        return
    else:
        source = "given"
    pooling.save(store.path)
    store.meta["vocab"] = {"file": VOCAB_FILE, "hash": pooling.vocab_hash(), "source": source}
    store.write_meta()


def fit_pending_post(store: Store, describer: Describer) -> bool:
    """After embedding: fit PCA-whitening on the stored vectors if the index asks for it and has none yet.

    Stored vectors are transformed in place and the transform saved, so from here on images and queries are
    described with it (``describer.post`` is set). It stays fixed on incremental updates (refitting would change
    every stored vector); a rebuild or ``vocab fit`` fits it afresh. Returns whether it fitted one.
    """
    want = store.meta.get("pca")
    if not want or store.meta.get("post") or len(store) < 2:
        return False
    pca = PCAWhitening(int(want)).fit(store.vectors)
    vectors = l2_normalize(pca.transform(store.vectors)).astype(np.float32)
    pca.save(store.path)
    table = store.table.drop_columns(["vector"])
    table = table.append_column(pa.field("vector", pa.list_(pa.float32(), vectors.shape[1])), vectors_to_arrow(vectors))
    store.meta["dim"] = int(vectors.shape[1])
    store.meta["post"] = pca.config()
    store.commit(table)
    describer.post = pca
    return True
