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
from typing import TYPE_CHECKING, Any

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
from lookalike.store import vectors_to_arrow

if TYPE_CHECKING:
    from lookalike.index import Index

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


# --- how an Index uses vocabularies and post-transforms (called from lookalike.index) ---------------------------


def model_kwargs(runtime: str, weights: str | os.PathLike[str] | None, model: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``create_model``: ``weights`` only reaches backbones that take a checkpoint file."""
    kwargs: dict[str, Any] = {"runtime": runtime}
    if weights:
        from lookalike.models.hub import HUB_MODELS

        if model is not None and model not in HUB_MODELS:
            raise LookalikeError(f"--weights applies to hub models ({', '.join(sorted(HUB_MODELS))}), not {model}")
        kwargs["weights"] = str(Path(weights).resolve())
    return kwargs


def pooling_spec(pooling: str | None, clusters: int | None = None, soft: bool = False) -> str | dict[str, Any] | None:
    """CLI flags -> a pooling config: ``--clusters``/``--soft`` make sense (and imply) VLAD only."""
    if clusters is None and not soft:
        return pooling
    if pooling not in (None, "vlad"):
        raise LookalikeError(f"--clusters and --soft are VLAD options; they do not apply to --pooling {pooling}")
    return {"name": "vlad", "clusters": 32 if clusters is None else clusters, "soft": soft}


def stored_model_kwargs(runtime: str, model_config: dict[str, Any]) -> dict[str, Any]:
    """Rebuild a backbone exactly as an index recorded it: checkpoint file, layer and facet for hub models."""
    kwargs = model_kwargs(runtime, model_config.get("weights_file"))
    kwargs.update({k: model_config[k] for k in ("layer", "facet") if k in model_config})
    return kwargs


def use_vocabulary(pooling: Pooling, vocab: str | os.PathLike[str] | None) -> Pooling:
    """Load a saved vocabulary (``--vocab FILE``) into a new index's VLAD pooling; its cluster count wins."""
    if vocab is None:
        return pooling
    if not isinstance(pooling, VLADPooling):
        raise LookalikeError("--vocab is a VLAD vocabulary; use it with --pooling vlad")
    centres, _ = read_vocabulary(vocab)
    pooling.clusters = int(centres.shape[0])
    return pooling.load(vocab)


def check_same_vocabulary(pooling: Pooling, vocab: str | os.PathLike[str] | None, index_path: Path) -> None:
    """An existing index keeps its vocabulary; a different ``--vocab`` needs ``--rebuild`` (or ``vocab fit``)."""
    if vocab is None:
        return
    if not isinstance(pooling, VLADPooling):
        raise LookalikeError(f"{index_path} does not use VLAD pooling; --vocab needs --pooling vlad --rebuild")
    other = VLADPooling(read_vocabulary(vocab)[0].shape[0]).load(vocab)
    if other.vocab_hash() != pooling.vocab_hash():
        raise IndexMismatchError(
            f"{index_path} was built with another VLAD vocabulary than {vocab}; add --rebuild to re-describe "
            "everything with it"
        )


def ensure_vocabulary(index: Index, files: Sequence[Path], *, progress: bool = False) -> None:
    """Before embedding: fit the VLAD vocabulary if there is none, and keep it in the index folder."""
    pooling = index.describer.pooling
    if not isinstance(pooling, VLADPooling):
        return
    store = index.store
    if pooling.needs_fit:
        if len(store):
            raise LookalikeError(
                f"{store.path} lost its VLAD vocabulary ({VOCAB_FILE}); run `lookalike vocab fit --index "
                f"{store.path}` to fit a new one and re-describe the images"
            )
        fit_vocabulary(index.describer, files, progress=progress)
        source = "fitted"
    elif store.meta.get("vocab", {}).get("hash") == pooling.vocab_hash() and (store.path / VOCAB_FILE).is_file():
        return
    else:
        source = "given"
    pooling.save(store.path)
    store.meta["vocab"] = {"file": VOCAB_FILE, "hash": pooling.vocab_hash(), "source": source}
    store.write_meta()


def fit_pending_post(index: Index) -> None:
    """After embedding: fit PCA-whitening on the stored vectors if the index asks for it and has none yet.

    Stored vectors are transformed in place and the transform saved, so from here on images and queries are
    described with it. It stays fixed on incremental updates (refitting would change every stored vector);
    ``--rebuild`` or ``vocab fit`` fits it afresh.
    """
    store = index.store
    want = store.meta.get("pca")
    if not want or store.meta.get("post") or len(store) < 2:
        return
    pca = PCAWhitening(int(want)).fit(store.vectors)
    vectors = l2_normalize(pca.transform(store.vectors)).astype(np.float32)
    pca.save(store.path)
    table = store.table.drop_columns(["vector"])
    table = table.append_column(pa.field("vector", pa.list_(pa.float32(), vectors.shape[1])), vectors_to_arrow(vectors))
    store.meta["dim"] = int(vectors.shape[1])
    store.meta["post"] = pca.config()
    store.commit(table)
    index.describer.post = pca
    index._invalidate()


def refit_index_vocabulary(
    index: Index,
    clusters: int = 32,
    *,
    soft: bool = False,
    out: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> Index:
    """``lookalike vocab fit``: a new vocabulary from the index's own images, then every image re-described.

    The index keeps its model, resolution, labels and PCA setting; its PCA-whitening (if any) is refitted too,
    since it was fitted on vectors of the old vocabulary.
    """
    from lookalike.index import Index as _Index

    meta = index.store.meta
    new = _Index.build(
        index.root,
        index.store.path,
        labels=meta.get("labels", "folders"),
        model=meta["model"]["name"],
        weights=meta["model"].get("weights_file"),
        pooling={"name": "vlad", "clusters": clusters, "soft": soft},
        resolution=meta["resolution"],
        pca=meta.get("pca"),
        vectors=meta.get("vectors"),
        rebuild=True,
        progress=progress,
        runtime=index.runtime,
    )
    if out is not None:
        new.describer.pooling.save(out)  # type: ignore[attr-defined]
    return new
