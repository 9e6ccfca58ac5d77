"""The training cache: pooled and stem activations of the frozen backbone, computed once per run (or once per
machine) rather than once per epoch.

* :func:`pooled_features`: GeM-pooled features of the whole untrained backbone. They are the head's input when the
  backbone stays frozen (``unfreeze=0``, so an epoch is a few milliseconds), the "before" metrics and the check that
  every file is readable. Cached on disk, keyed by file, size and mtime, per weights and resolution.
* :func:`stem_features`: when the last N blocks are fine-tuned, the output of the layers before them, for the plain
  image and a few augmented views. The frozen part is most of the network, so running it once per view instead of
  once per image per epoch is what makes fine-tuning affordable on two cores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.io import atomic_write
from lookalike.models.base import cache_dir
from lookalike.training.data import AUG_VIEWS, augment, load_pixels

BATCH = 32
GEM_P = 3.0  # the power the trained graph pools with (lookalike.models.trained.build_embedder's default)


def base_weights_id(model: str) -> str:
    """Hash of a base model's ImageNet weights file, without building the model."""
    from lookalike.models.base import file_hash
    from lookalike.models.efficientnet import weights_file

    return file_hash(weights_file(model.removeprefix("efficientnet-")))


def _file_key(p: Path) -> str:
    try:
        st = p.stat()
        return f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        return f"{p}|missing"


def _read_cache(cache: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    if not cache.exists():
        return {}, {}
    try:
        with np.load(cache, allow_pickle=False) as z:
            known = dict(zip(z["keys"].tolist(), z["vectors"], strict=True))
            bad = dict(zip(z["bad_keys"].tolist(), z["bad_reasons"].tolist(), strict=True))
    except Exception:  # a damaged cache is only lost time
        return {}, {}
    return known, bad


def _write_cache(cache: Path, known: dict[str, np.ndarray], bad: dict[str, str]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: given a name, np.savez would append ".npz" to it
            np.savez(
                fh,
                keys=np.array(list(known), dtype=str),
                vectors=np.stack(list(known.values())) if known else np.zeros((0, 1), np.float32),
                bad_keys=np.array(list(bad), dtype=str),
                bad_reasons=np.array(list(bad.values()), dtype=str),
            )

    atomic_write(cache, write)


def pooled_features(
    paths: list[Path], model: str, resolution: int, *, progress: bool = False
) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """L2-normalised GeM features of the untrained backbone for each path, and (path, why) of the unreadable files
    (their rows are NaN).

    GeM pools over the whole feature map, letterbox padding included, exactly as the trained graph does. Cached in
    one file per (weights, resolution) under the lookalike cache, keyed by path, size and mtime, so the second run
    on the same folder (or a subset of it) decodes nothing.
    """
    from lookalike.config import IndexConfig
    from lookalike.embed import Describer
    from lookalike.progress import bar

    weights = base_weights_id(model)  # the base model is built only if something is not cached
    cache = cache_dir() / "train-features" / f"{model}-{weights[:16]}-{resolution}.npz"
    known, bad = _read_cache(cache)
    keys = [_file_key(p) for p in paths]
    todo = [p for p, k in zip(paths, keys, strict=True) if k not in known and k not in bad]
    if todo:
        pooling = {"name": "gem", "p": GEM_P, "include_padding": True}
        # fp32: these are the untrained backbone's features that fine-tuning (in torch, fp32) starts from
        config = IndexConfig(model=model, pooling=pooling, resolution=resolution, precision="fp32")
        describer = Describer.from_config(config)
        by_path = dict(zip(paths, keys, strict=True))
        with bar("backbone features", len(todo), progress) as tick:
            for batch in describer.describe_files(todo, batch_size=BATCH):
                for item, vec in zip(batch.described, batch.vectors, strict=True):
                    known[by_path[item.path]] = vec
                for item in batch.items:
                    if item.error is not None:
                        bad[by_path[item.path]] = item.error
                tick.advance(len(batch.items))
        # forget files that no longer exist (e.g. temporary folders), so the cache does not grow without bound
        known = {k: v for k, v in known.items() if os.path.exists(k.split("|", 1)[0])}
        bad = {k: v for k, v in bad.items() if os.path.exists(k.split("|", 1)[0])}
        _write_cache(cache, known, bad)
    dim = next(iter(known.values())).shape[0] if known else 1280
    out = np.full((len(paths), dim), np.nan, np.float32)
    unreadable = []
    for i, (p, k) in enumerate(zip(paths, keys, strict=True)):
        if k in known:
            out[i] = known[k]
        else:
            unreadable.append((p, bad.get(k, "cannot read")))
    return out, unreadable


def frozen_part(embedder: Any, model: str, upto: int) -> Any:
    """The frozen layers (stem and the first ``upto`` blocks) as a backbone of their own, so they run through ONNX
    Runtime like every other model here (about 3× eager torch on two cores), exported once per base model and cut."""
    import torch

    from lookalike.models.base import TorchBackbone
    from lookalike.models.efficientnet import PIXEL_MEAN, PIXEL_STD

    class Frozen(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedder = embedder

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.embedder.stem(x, upto)

    return TorchBackbone(
        f"{model}-frozen{upto}",
        Frozen().eval(),
        feature_dim=0,
        stride=0,
        weights_id=f"{base_weights_id(model)[:16]}-frozen{upto}",
        mean=PIXEL_MEAN,
        std=PIXEL_STD,
    )


def stem_features(
    embedder: Any,
    model: str,
    paths: list[Path],
    train_idx: np.ndarray,
    size: int,
    start: int,
    rng: np.random.Generator,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Outputs of the frozen layers (those before block ``start``), computed once: (N, C, h, w) of the plain images
    and (AUG_VIEWS - 1, n_train, C, h, w) of augmented views of the training images.

    Each epoch draws one of the views for every training image. Stored as float16 to halve the memory (about 19 KB
    per view at 224 px for EfficientNet-Lite0).
    """
    from lookalike.progress import bar

    frozen = frozen_part(embedder, model, start)
    is_train = np.zeros(len(paths), bool)
    is_train[train_idx] = True
    plain, views = [], []
    with bar("frozen layers", len(paths), progress) as tick:
        for s in range(0, len(paths), BATCH):
            chunk = paths[s : s + BATCH]
            plain.append(frozen.features(load_pixels(chunk, size).astype(np.float32)).astype(np.float16))
            train_chunk = [p for p, t in zip(chunk, is_train[s : s + BATCH], strict=True) if t]
            if train_chunk:
                big = load_pixels(train_chunk, size + size // 8)
                views.append(
                    np.stack(
                        [frozen.features(augment(big, size, rng)).astype(np.float16) for _ in range(AUG_VIEWS - 1)]
                    )
                )
            tick.advance(len(chunk))
    return np.concatenate(plain), np.concatenate(views, axis=1)
