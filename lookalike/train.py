"""Learn an embedding from labelled folders (``lookalike train``): metric learning on top of the offline backbone.

The ImageNet backbone is only fair on a user's own domain (about 0.85 linear-probe accuracy on room photos), so
lookalike learns from the user's labels instead of shipping a bigger model. Two regimes:

* ``unfreeze=0`` trains a projection head on backbone features pooled once and cached (keyed by file, size, mtime,
  weights and resolution), so an epoch is a few milliseconds and a whole run takes minutes on two cores;
* ``unfreeze=N`` also fine-tunes the last N blocks of the backbone on lightly augmented images (crop, flip, colour).
  The frozen layers run once per image and view (eager torch; the slow part), then every epoch only runs the last
  blocks, so many epochs stay affordable.

Losses and miners are pytorch-metric-learning's (NormalizedSoftmaxLoss with temperature 1/λ, TripletMarginLoss with a
semi-hard or batch-hard miner, ArcFaceLoss); validation is its AccuracyCalculator (precision@1, mAP@R) with the
held-out images as queries and the training images as references. Each epoch is checkpointed in ``OUT/run/``, so a
killed run resumes; the finished model is written last-marker-last (see :mod:`lookalike.models.trained`).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.aggregate import GeMPooling
from lookalike.errors import LookalikeError
from lookalike.images import find_images
from lookalike.models.base import cache_dir
from lookalike.models.trained import (
    BASE_MODELS,
    CARD_FILE,
    COMPLETE_FILE,
    FORMAT,
    FORMAT_VERSION,
    MEMBERS_DIR,
    RUN_DIR,
    WEIGHTS_FILE,
    build_embedder,
)

LOSSES = ("normsoftmax", "triplet", "arcface")
MINERS = ("semihard", "hard")
DEFAULT_SCALE = {"normsoftmax": 20.0, "arcface": 30.0}
DEFAULT_MARGIN = {"triplet": 0.2, "arcface": 28.6}  # triplet: cosine distance; arcface: degrees (PML's unit)
CHECKPOINT = "checkpoint.pt"
# Blocks that may be fine-tuned: all of the stride-16 stage after its first (downsampling) block, and everything
# after it. The frozen maps cached per view then stay at 1/16 of the image side; one block further back they would
# be at 1/8, four times the memory and the compute per step.
MAX_UNFREEZE = {"efficientnet-lite0": 10, "efficientnet-lite2": 13}
_OUR_FILES = (COMPLETE_FILE, CARD_FILE, WEIGHTS_FILE, "MODEL.md", "curves.png", "tsne.png", RUN_DIR, MEMBERS_DIR)


@dataclass
class TrainOptions:
    """Everything that defines a run; a resumed run must be asked for with the same options (epochs may grow)."""

    loss: str = "normsoftmax"
    scale: float | None = None
    margin: float | None = None
    miner: str = "semihard"
    unfreeze: int = 0
    epochs: int | None = None
    val_split: float = 0.15
    resolution: int | None = None
    model: str = "efficientnet-lite0"
    dim: int = 128
    head: str = "mlp"
    batch_size: int = 64
    lr: float | None = None
    patience: int = 5
    seed: int = 0
    crop: float = 0.75
    schedule: str = "constant"
    members: int = 1
    drop_suspects: float = 0.0

    def resolved(self) -> TrainOptions:
        o = TrainOptions(**asdict(self))
        if o.loss not in LOSSES:
            raise LookalikeError(f"unknown loss {o.loss!r}; use one of {', '.join(LOSSES)}")
        if o.miner not in MINERS:
            raise LookalikeError(f"unknown miner {o.miner!r}; use semihard or hard")
        if o.model not in BASE_MODELS:
            raise LookalikeError(f"can only train on {', '.join(BASE_MODELS)}, not {o.model!r}")
        if not 0 <= o.unfreeze <= MAX_UNFREEZE[o.model]:
            raise LookalikeError(
                f"--unfreeze must be 0..{MAX_UNFREEZE[o.model]} for {o.model} (blocks of the backbone to fine-tune), "
                f"got {o.unfreeze}"
            )
        if not 0.0 < o.val_split < 0.9:
            raise LookalikeError(f"--val-split must be between 0 and 0.9, got {o.val_split}")
        if o.head not in ("mlp", "linear"):
            raise LookalikeError(f"--head must be mlp or linear, got {o.head!r}")
        if not 0.25 <= o.crop <= 1.0:
            raise LookalikeError(f"--crop must be between 0.25 and 1 (fraction of the side kept), got {o.crop}")
        if o.schedule not in ("constant", "cosine"):
            raise LookalikeError(f"--schedule must be constant or cosine, got {o.schedule!r}")
        if not 1 <= o.members <= 8:
            raise LookalikeError(f"--members must be 1..8 (models trained with seeds seed..seed+N-1), got {o.members}")
        if not 0.0 <= o.drop_suspects < 1.0:
            raise LookalikeError(
                f"--drop-suspects must be 0 (keep all) or a probability below 1, got {o.drop_suspects}"
            )
        if o.dim < 2 or o.batch_size < 4 or o.patience < 1:
            raise LookalikeError("--dim must be ≥ 2, --batch-size ≥ 4 and --patience ≥ 1")
        o.scale = float(o.scale if o.scale is not None else DEFAULT_SCALE.get(o.loss, 0.0)) or None
        if o.scale is not None and o.scale <= 0:
            raise LookalikeError(f"--scale must be positive, got {o.scale}")
        o.margin = float(o.margin if o.margin is not None else DEFAULT_MARGIN.get(o.loss, 0.0)) or None
        o.epochs = int(o.epochs or 40)
        if o.epochs < 1:
            raise LookalikeError(f"--epochs must be at least 1, got {o.epochs}")
        o.resolution = int(o.resolution or (224 if o.model == "efficientnet-lite0" else 260))
        o.resolution = max(32, round(o.resolution / 32) * 32)
        o.lr = float(o.lr or (1e-3 if o.unfreeze == 0 else 3e-4))
        return o


def _lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Cosine decay to 1/100 by the last epoch; a function of the epoch alone so a resumed run continues the curve
    (growing --epochs on resume stretches the rest of it). Not the default: on rooms it matched the constant rate's
    held-out accuracy, no better (BENCHMARKS.md)."""
    if schedule == "constant" or epochs <= 1:
        return 1.0
    t = (epoch - 1) / (epochs - 1)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))


@dataclass
class TrainResult:
    """What a run produced; ``metrics`` holds validation precision@1 / mAP@R before (raw backbone) and after."""

    out: Path
    classes: list[str]
    n_train: int
    n_val: int
    epochs_run: int
    best_epoch: int
    metrics: dict[str, dict[str, float]]
    seconds: float
    resumed_from: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dropped_classes: list[str] = field(default_factory=list)
    members: list[TrainResult] = field(default_factory=list)


# --- data -----------------------------------------------------------------------------------------------------


def labelled_files(root: str | os.PathLike[str]) -> list[tuple[Path, str]]:
    """(file, class) for every image in ``root/<class>/...`` (nested folders belong to their top-level class)."""
    root = Path(root)
    if not root.is_dir():
        raise LookalikeError(f"not a folder: {root}")
    out = []
    for p in find_images(root):
        rel = p.relative_to(root)
        if len(rel.parts) >= 2:
            out.append((p, rel.parts[0]))
    if not out:
        raise LookalikeError(f"{root} has no class folders with images; expected {root}/<class>/<image>.jpg")
    return out


def _check_classes(files: list[tuple[Path, str]]) -> tuple[list[tuple[Path, str]], list[str]]:
    """Drop classes with a single image (nothing to learn "same" from) and refuse fewer than two classes."""
    counts = Counter(label for _, label in files)
    dropped = sorted(c for c, n in counts.items() if n < 2)
    kept = [(p, c) for p, c in files if c not in dropped]
    classes = sorted({c for _, c in kept})
    if len(classes) < 2:
        what = f"only {len(classes)} class with at least two images" if classes else "no class with two images"
        detail = f" ({', '.join(dropped)} had one usable image)" if dropped else ""
        raise LookalikeError(f"training needs at least two classes of two or more images; found {what}{detail}")
    return kept, dropped


def _split(labels: np.ndarray, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: every class keeps at least one training and one validation image."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(len(idx) - 1, max(1, round(len(idx) * val_split)))
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train)), np.sort(np.array(val))


class _FullMapGeM(GeMPooling):
    """GeM over every cell, padding included: exactly what the trained graph computes in-graph."""

    def transform(self, features: np.ndarray, cells: np.ndarray | None = None) -> np.ndarray:
        return super().transform(features, None)


def _file_key(p: Path) -> str:
    st = p.stat()
    return f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def pooled_features(
    paths: list[Path], model: str, resolution: int, *, progress: bool = False
) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """L2-normalised GeM features of the untrained backbone for each path (rows of unreadable files are NaN).

    Cached in one file per (weights, resolution) under the lookalike cache, keyed by path, size and mtime, so the
    second run on the same folder (or a subset of it) decodes nothing.
    """
    from lookalike.embed import Describer
    from lookalike.models import create_model
    from lookalike.models.base import file_hash
    from lookalike.models.efficientnet import _weights_file
    from lookalike.progress import bar

    weights = file_hash(_weights_file(model.removeprefix("efficientnet-")))  # the base model is built only if needed
    cache = cache_dir() / "train-features" / f"{model}-{weights[:16]}-{resolution}.npz"
    known: dict[str, np.ndarray] = {}
    bad: dict[str, str] = {}
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as z:
                known = dict(zip(z["keys"].tolist(), z["vectors"], strict=True))
                bad = dict(zip(z["bad_keys"].tolist(), z["bad_reasons"].tolist(), strict=True))
        except Exception:  # a damaged cache is only lost time
            known, bad = {}, {}
    keys = []
    for p in paths:
        try:
            keys.append(_file_key(p))
        except OSError:
            keys.append(f"{p}|missing")
    todo = [p for p, k in zip(paths, keys, strict=True) if k not in known and k not in bad]
    if todo:
        backbone = create_model(model)
        describer = Describer(backbone, _FullMapGeM(), resolution)
        by_path = {p: k for p, k in zip(paths, keys, strict=True)}
        with bar("backbone features", len(todo), progress) as tick:
            for batch in describer.describe_files(todo, batch_size=32):
                for item, vec in zip(batch.described, batch.vectors, strict=True):
                    known[by_path[item.path]] = vec
                for item in batch.items:
                    if item.error is not None:
                        bad[by_path[item.path]] = item.error
                tick.advance(len(batch.items))
        # forget files that no longer exist (e.g. temporary folders), so the cache does not grow without bound
        known = {k: v for k, v in known.items() if os.path.exists(k.split("|", 1)[0])}
        bad = {k: v for k, v in bad.items() if os.path.exists(k.split("|", 1)[0])}
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=cache.parent)
        os.close(fd)
        try:
            np.savez(
                tmp,
                keys=np.array(list(known), dtype=str),
                vectors=np.stack(list(known.values())) if known else np.zeros((0, 1), np.float32),
                bad_keys=np.array(list(bad), dtype=str),
                bad_reasons=np.array(list(bad.values()), dtype=str),
            )
            os.replace(tmp, cache)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    dim = next(iter(known.values())).shape[0] if known else 1280
    out = np.full((len(paths), dim), np.nan, np.float32)
    skipped = []
    for i, (p, k) in enumerate(zip(paths, keys, strict=True)):
        if k in known:
            out[i] = known[k]
        else:
            skipped.append((p, bad.get(k, "cannot read")))
    return out, skipped


def _load_pixels(paths: list[Path], size: int) -> np.ndarray:
    """Letterboxed uint8 pixels (N, size, size, 3) for fine-tuning (files were already checked readable)."""
    from lookalike.images import decode, letterbox, read_file

    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(paths):
        img, _ = decode(read_file(p), str(p), target=size)
        out[i] = letterbox(img, size)[0]
    return out


def _augment(pixels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Random crop (of a slightly larger letterbox), horizontal flip and colour jitter: float32 NHWC pixels, 0–255."""
    n, big = pixels.shape[0], pixels.shape[1]
    crops = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        y, x = rng.integers(0, big - size + 1, 2)
        c = pixels[i, y : y + size, x : x + size]
        crops[i] = c[:, ::-1] if rng.random() < 0.5 else c
    bright, contrast, sat = (rng.uniform(0.8, 1.2, (3, n, 1, 1, 1))).astype(np.float32)
    t = crops * bright
    mean = t.mean(axis=(1, 2, 3), keepdims=True)
    t = (t - mean) * contrast + mean
    grey = t.mean(axis=3, keepdims=True)
    return np.clip((t - grey) * sat + grey, 0, 255)


AUG_VIEWS = 4  # the plain image and three augmented views per training image


def _random_crop(maps: np.ndarray, smallest: float, rng: np.random.Generator) -> np.ndarray:
    """A random window of each cached frozen feature map, one size per batch (drawn from ``smallest``..1 of a side).

    Three fixed views of each image are all the frozen pass can afford, and the tuned blocks learn them by heart
    within a few epochs; a fresh crop of the frozen map every step is almost the same as cropping the image (the
    tuned blocks are convolutions and GeM pools whatever size it gets) and costs nothing.
    """
    if smallest >= 1.0:
        return maps
    n, _, h, w = maps.shape
    f = rng.uniform(smallest, 1.0)
    sh, sw = max(1, round(f * h)), max(1, round(f * w))
    ys, xs = rng.integers(0, h - sh + 1, n), rng.integers(0, w - sw + 1, n)
    return np.stack([m[:, y : y + sh, x : x + sw] for m, y, x in zip(maps, ys, xs, strict=True)])


def _epoch_order(labels: np.ndarray, m: int, batch: int, seed: int) -> np.ndarray:
    """One epoch's batches (``m`` images of each of ``batch / m`` classes), drawn from ``seed`` alone.

    PML's sampler draws from numpy's global random state and keeps its shuffled class order from epoch to epoch:
    used as it is, one --seed would sample differently on every run, and a resumed run differently from an
    uninterrupted one. A fresh sampler per epoch drawing from a seeded generator makes the batches a function of
    (seed, epoch).
    """
    from pytorch_metric_learning.samplers import MPerClassSampler
    from pytorch_metric_learning.utils import common_functions as pml_common

    sampler = MPerClassSampler(labels, m=m, batch_size=batch, length_before_new_iter=max(batch, len(labels)))
    saved, pml_common.NUMPY_RANDOM = pml_common.NUMPY_RANDOM, np.random.RandomState(seed)
    try:
        return np.array(list(iter(sampler)))
    finally:
        pml_common.NUMPY_RANDOM = saved


@contextmanager
def _keep_freed_memory() -> Iterator[None]:
    """Keep freed heap memory in the process while fine-tuning, then hand it back.

    Every training step allocates and frees activation buffers of tens of MB. glibc serves blocks above 32 MB with
    a fresh mmap each time, so every step paid for the kernel zeroing new pages: about 40% of the CPU time was
    system time, and a Lite2 step at 384 px took twice as long (measured in BENCHMARKS.md). Serving them from the
    heap and not trimming it reuses the same pages. Elsewhere than glibc this does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both exist only on glibc
    except (OSError, AttributeError):
        yield
        return
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2**31 - 1)
    libc.mallopt(m_top_pad, 256 << 20)
    try:
        yield
    finally:  # glibc's defaults, and the kept memory returned to the system
        libc.mallopt(m_mmap_max, 65536)
        libc.mallopt(m_trim_threshold, 128 << 10)
        libc.mallopt(m_top_pad, 128 << 10)
        libc.malloc_trim(0)


def _frozen_part(embedder: Any, model: str, upto: int) -> Any:
    """The frozen layers (stem and the first ``upto`` blocks) as a backbone of their own, so they run through ONNX
    Runtime like every other model here (about 3× eager torch on two cores), exported once per base model and cut."""
    import torch

    from lookalike.models.base import TorchBackbone, file_hash
    from lookalike.models.efficientnet import _weights_file
    from lookalike.models.trained import _MEAN, _STD

    class Frozen(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedder = embedder

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.embedder.stem(x, upto)

    weights = file_hash(_weights_file(model.removeprefix("efficientnet-")))
    return TorchBackbone(
        f"{model}-frozen{upto}",
        Frozen().eval(),
        feature_dim=0,
        stride=0,
        weights_id=f"{weights[:16]}-frozen{upto}",
        mean=_MEAN,
        std=_STD,
    )


def _stem_features(
    embedder: Any,
    model: str,
    paths: list[Path],
    train_idx: np.ndarray,
    size: int,
    start: int,
    rng: np.random.Generator,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Outputs of the frozen layers, computed once: (N, C, h, w) plain and (views-1, n_train, C, h, w) augmented.

    The frozen part is most of the network, so running it once per view instead of once per image per epoch is
    what makes fine-tuning affordable on two cores; each epoch draws one of the views for every training image.
    Stored as float16 to halve the memory (about 19 KB per view at 224 px for EfficientNet-Lite0).
    """
    from lookalike.progress import bar

    frozen = _frozen_part(embedder, model, start)
    is_train = np.zeros(len(paths), bool)
    is_train[train_idx] = True
    plain, views = [], []
    with bar("frozen layers", len(paths), progress) as tick:
        for s in range(0, len(paths), 32):
            chunk = paths[s : s + 32]
            plain.append(frozen.features(_load_pixels(chunk, size).astype(np.float32)).astype(np.float16))
            train_chunk = [p for p, t in zip(chunk, is_train[s : s + 32], strict=True) if t]
            if train_chunk:
                big = _load_pixels(train_chunk, size + size // 8)
                views.append(
                    np.stack(
                        [frozen.features(_augment(big, size, rng)).astype(np.float16) for _ in range(AUG_VIEWS - 1)]
                    )
                )
            tick.advance(len(chunk))
    return np.concatenate(plain), np.concatenate(views, axis=1)


# --- metrics and plots -------------------------------------------------------------------------------------------


def retrieval_metrics(query: np.ndarray, q_labels: np.ndarray, ref: np.ndarray, r_labels: np.ndarray) -> dict:
    """precision@1 and mAP@R of queries against a disjoint reference set (cosine on unit vectors)."""
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count", device=None)
    import torch

    res = calc.get_accuracy(
        torch.from_numpy(np.ascontiguousarray(query, np.float32)),
        torch.from_numpy(np.asarray(q_labels)),
        torch.from_numpy(np.ascontiguousarray(ref, np.float32)),
        torch.from_numpy(np.asarray(r_labels)),
        ref_includes_query=False,
    )
    return {"precision_at_1": float(res["precision_at_1"]), "map_at_r": float(res["mean_average_precision_at_r"])}


def _plot_curves(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(ep, [h["loss"] for h in history], marker="o")
    a.set(xlabel="epoch", ylabel="training loss", title="loss")
    b.plot(ep, [h["precision_at_1"] for h in history], marker="o", label="precision@1")
    b.plot(ep, [h["map_at_r"] for h in history], marker="o", label="mAP@R")
    b.set(xlabel="epoch", ylabel="validation", title="validation retrieval", ylim=(0, 1.02))
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_tsne(before: np.ndarray, after: np.ndarray, labels: np.ndarray, classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    n = len(labels)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    cmap = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    for ax, x, title in ((axes[0], before, "before (backbone)"), (axes[1], after, "after (trained)")):
        if n >= 4:
            perplexity = float(max(2.0, min(30.0, (n - 1) / 3)))
            small = n <= 300  # exact gradients are quicker than Barnes-Hut for a few hundred points
            xy = TSNE(
                2,
                perplexity=perplexity,
                init="pca",
                random_state=0,
                metric="cosine",
                method="exact" if small else "barnes_hut",
                max_iter=500 if small else 1000,
            ).fit_transform(x)
        else:
            xy = np.zeros((n, 2))
        for c in range(len(classes)):
            m = labels == c
            ax.scatter(xy[m, 0], xy[m, 1], s=10, color=cmap(c % cmap.N), label=classes[c])
        ax.set(title=f"validation embeddings, {title}", xticks=[], yticks=[])
    if len(classes) <= 25:
        axes[1].legend(fontsize=7, markerscale=1.5, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the run -----------------------------------------------------------------------------------------------------


def _save_atomic(obj: Any, path: Path) -> None:
    import torch

    fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _make_loss(o: TrainOptions, n_classes: int) -> tuple[Any, Any]:
    from pytorch_metric_learning import losses, miners

    if o.loss == "normsoftmax":
        return losses.NormalizedSoftmaxLoss(n_classes, o.dim, temperature=1.0 / o.scale), None
    if o.loss == "arcface":
        return losses.ArcFaceLoss(n_classes, o.dim, margin=o.margin, scale=o.scale), None
    loss = losses.TripletMarginLoss(margin=o.margin)
    if o.miner == "hard":
        return loss, miners.BatchHardMiner()
    return loss, miners.TripletMarginMiner(margin=o.margin, type_of_triplets="semihard")


def _prepare_out(out: Path, overwrite: bool, resume: bool | None) -> Path | None:
    """Check the output folder; return the checkpoint to resume from, if any."""
    if out.exists() and not out.is_dir():
        raise LookalikeError(f"--out {out} is a file; give a folder for the model")
    ckpt = out / RUN_DIR / CHECKPOINT
    if out.is_dir():
        if (out / COMPLETE_FILE).exists() and not overwrite:
            raise LookalikeError(
                f"{out} already holds a trained model; pass --overwrite to replace it, or another --out"
            )
        foreign = [p.name for p in out.iterdir() if p.name not in _OUR_FILES and not p.name.endswith(".tmp")]
        if foreign:
            raise LookalikeError(f"{out} is not empty and is not a lookalike model folder ({foreign[0]}, ...)")
        if overwrite or resume is False:
            (out / COMPLETE_FILE).unlink(missing_ok=True)  # first: the folder stops being a model at once
            for name in _OUR_FILES:
                p = out / name
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
            return None
        if ckpt.exists():
            return ckpt
    if resume:
        raise LookalikeError(f"nothing to resume in {out} (no unfinished run there)")
    return None


def train(
    data: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    options: TrainOptions | None = None,
    *,
    files: list[tuple[Path, str]] | None = None,
    overwrite: bool = False,
    resume: bool | None = None,
    progress: bool = False,
    log: Any = None,
) -> TrainResult:
    """Train an embedding on ``data/<class>/*`` (or explicit ``files``) and write a model folder to ``out``.

    ``resume``: None resumes an unfinished run in ``out`` automatically, True requires one, False starts afresh.
    ``log`` is called with one line per epoch (the CLI prints them).
    """
    import torch

    started = time.perf_counter()
    o = (options or TrainOptions()).resolved()
    out = Path(out)
    say = log or (lambda _msg: None)
    if files is None:
        if data is None:
            raise LookalikeError("give a labelled folder to train on")
        files = labelled_files(data)
    if o.members > 1:
        return _train_members(data, out, o, files, overwrite, resume, progress, say, started)
    files, dropped = _check_classes(files)
    ckpt_path = _prepare_out(out, overwrite, resume)

    # Backbone features once: they are the head's input (unfreeze 0), the "before" metrics and the readability check.
    paths = [p for p, _ in files]
    pooled, bad = pooled_features(paths, o.model, o.resolution, progress=progress)
    ok = ~np.isnan(pooled).any(axis=1)
    skipped = [(str(p), why) for p, why in bad]
    files = [f for f, good in zip(files, ok, strict=True) if good]
    pooled = pooled[ok]
    suspects: list[dict[str, Any]] = []
    if o.drop_suspects:
        # Before the split, so neither training nor validation learns from a label the rest of the data contradicts;
        # judged on the untrained features, as the fine-tuned model would have learnt the wrong label by heart.
        from lookalike.evaluate import label_suspects

        found = label_suspects(pooled, [c for _, c in files], below=o.drop_suspects)
        keep = np.ones(len(files), bool)
        keep[[s["row"] for s in found]] = False
        suspects = [{"path": str(files[s.pop("row")][0]), **s} for s in found]
        files, pooled = [f for f, k in zip(files, keep, strict=True) if k], pooled[keep]
        say(f"left out {len(suspects)} images whose folder label the others contradict (p < {o.drop_suspects:g})")
    kept, dropped2 = _check_classes(files)
    if dropped2:
        pooled = pooled[[c not in dropped2 for _, c in files]]
        files = kept
    dropped = sorted(set(dropped) | set(dropped2))
    classes = sorted({c for _, c in files})
    labels = np.array([classes.index(c) for _, c in files])
    tr, va = _split(labels, o.val_split, o.seed)
    data_hash = hashlib.blake2b("\n".join(f"{p}|{c}" for p, c in files).encode(), digest_size=8).hexdigest()

    run_options = {k: v for k, v in asdict(o).items() if k not in ("epochs", "patience")}
    state: dict[str, Any] | None = None
    if ckpt_path is not None:
        try:
            state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        except Exception:
            state = None
            say(f"checkpoint in {ckpt_path.parent} is unreadable; starting afresh")
        if state is not None and (state.get("options") != run_options or state.get("data") != data_hash):
            raise LookalikeError(
                f"{out} holds an unfinished run with other options or data; pass the same options to resume it, "
                "--overwrite to start afresh, or another --out"
            )
    (out / RUN_DIR).mkdir(parents=True, exist_ok=True)

    torch.manual_seed(o.seed)
    head_cfg = {"type": o.head, "in": pooled.shape[1], "hidden": 512, "dim": o.dim, "dropout": 0.1}
    embedder = build_embedder(o.model, head_cfg)
    loss_fn, miner = _make_loss(o, len(classes))
    n_blocks = len(embedder.net._blocks)
    start = n_blocks - o.unfreeze
    for prm in embedder.net.parameters():
        prm.requires_grad = False
    trainable = list(embedder.head.parameters())
    if o.unfreeze:
        tuned = [*embedder.net._blocks[start:], embedder.net._conv_head, embedder.net._bn1]
        for m in tuned:
            for prm in m.parameters():
                prm.requires_grad = True
        backbone_params = [p for m in tuned for p in m.parameters()]
    groups = [{"params": trainable, "lr_mult": 1.0}]  # each epoch sets lr = --lr × lr_mult × schedule
    if o.unfreeze:
        groups.append({"params": backbone_params, "lr_mult": 1 / 3})
    if list(loss_fn.parameters()):
        groups.append({"params": list(loss_fn.parameters()), "lr_mult": 10.0})
    opt = torch.optim.Adam(groups, lr=o.lr, weight_decay=1e-4)

    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"epoch": 0, "score": -1.0, "state": None}
    first_epoch = 1
    if state is not None:
        embedder.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        opt.load_state_dict(state["opt"])
        history, best, first_epoch = state["history"], state["best"], state["epoch"] + 1
        say(f"resuming {out} after epoch {state['epoch']}")

    frozen_seconds = 0.0
    x_pooled = torch.from_numpy(pooled)
    y = torch.from_numpy(labels)
    before = retrieval_metrics(pooled[va], labels[va], pooled[tr], labels[tr])
    if o.unfreeze:
        say(
            f"frozen layers once: {len(files)} images and {AUG_VIEWS - 1} augmented views of each training image "
            f"at {o.resolution} px"
        )
        t_frozen = time.perf_counter()
        stem_plain, stem_views = _stem_features(
            embedder, o.model, [p for p, _ in files], tr, o.resolution, start, np.random.default_rng(o.seed), progress
        )
        frozen_seconds = time.perf_counter() - t_frozen
        say(f"frozen layers done in {frozen_seconds:.0f}s")

    def embed_all() -> np.ndarray:
        embedder.eval()
        with torch.inference_mode():
            if not o.unfreeze:
                return embedder.embed_pooled(x_pooled).numpy()
            outs = []
            for s in range(0, len(files), 64):
                h = torch.from_numpy(stem_plain[s : s + 64].astype(np.float32))
                outs.append(embedder.embed_pooled(embedder.pool(embedder.top(h, start))).numpy())
            return np.concatenate(outs)

    m = 4
    batch = max(m, min(o.batch_size, m * len(classes)) // m * m)
    rng = np.random.default_rng(o.seed + first_epoch)
    epoch = first_epoch - 1
    stopped_early = False
    with _keep_freed_memory():  # the fine-tuning steps: see there
        for epoch in range(first_epoch, o.epochs + 1):
            if best["epoch"] and epoch - best["epoch"] > o.patience:
                stopped_early = True
                epoch -= 1
                break
            t0 = time.perf_counter()
            for g in opt.param_groups:
                g["lr"] = o.lr * g["lr_mult"] * _lr_factor(o.schedule, epoch, o.epochs)
            torch.manual_seed(o.seed * 1000 + epoch)
            embedder.eval()  # BatchNorm of the backbone stays frozen; only the head's layers train
            embedder.head.train()
            order = _epoch_order(labels[tr], m, batch, o.seed * 1000 + epoch)
            losses = []
            for s in range(0, len(order) - batch + 1, batch):
                idx = tr[order[s : s + batch]]
                if o.unfreeze:
                    pos = order[s : s + batch]
                    view = rng.integers(0, AUG_VIEWS, len(pos))  # 0: the plain image, else an augmented view
                    h = np.where(
                        (view == 0)[:, None, None, None], stem_plain[tr[pos]], stem_views[np.maximum(view - 1, 0), pos]
                    )
                    h = _random_crop(h, o.crop, rng)
                    emb = embedder.embed_pooled(
                        embedder.pool(embedder.top(torch.from_numpy(h.astype(np.float32)), start))
                    )
                else:
                    emb = embedder.embed_pooled(x_pooled[idx])
                yb = y[idx]
                loss = loss_fn(emb, yb, miner(emb, yb)) if miner is not None else loss_fn(emb, yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            emb_all = embed_all()
            metrics = retrieval_metrics(emb_all[va], labels[va], emb_all[tr], labels[tr])
            row = {
                "epoch": epoch,
                "loss": float(np.mean(losses)) if losses else 0.0,
                "lr": opt.param_groups[0]["lr"],
                **metrics,
                "seconds": time.perf_counter() - t0,
            }
            history.append(row)
            score = metrics["map_at_r"] + metrics["precision_at_1"]
            if score > best["score"]:
                best = {
                    "epoch": epoch,
                    "score": score,
                    "state": {k: v.clone() for k, v in embedder.state_dict().items()},
                }
            _save_atomic(
                {
                    "epoch": epoch,
                    "model": embedder.state_dict(),
                    "loss": loss_fn.state_dict(),
                    "opt": opt.state_dict(),
                    "history": history,
                    "best": best,
                    "options": run_options,
                    "data": data_hash,
                },
                out / RUN_DIR / CHECKPOINT,
            )
            say(
                f"epoch {epoch}/{o.epochs}: loss {row['loss']:.4f}, val precision@1 {metrics['precision_at_1']:.3f}, "
                f"mAP@R {metrics['map_at_r']:.3f} ({row['seconds']:.1f}s)" + (" *" if best["epoch"] == epoch else "")
            )
    if best["state"] is None:
        raise LookalikeError("training produced no epochs; raise --epochs")
    if stopped_early:
        say(f"stopped early: no better validation for {o.patience} epochs after epoch {best['epoch']}")

    # Finish: best weights, plots, card, and the `complete` marker last.
    embedder.load_state_dict(best["state"])
    final = embed_all()
    after = retrieval_metrics(final[va], labels[va], final[tr], labels[tr])
    _save_atomic(embedder.state_dict(), out / WEIGHTS_FILE)
    _plot_curves(history, out / "curves.png")
    _plot_tsne(pooled[va], final[va], labels[va], classes, out / "tsne.png")
    counts = Counter(labels[tr].tolist())
    counts_val = Counter(labels[va].tolist())
    card = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "base_model": o.model,
        "resolution": o.resolution,
        "gem_p": 3.0,
        "head": head_cfg,
        "embedding_dim": o.dim,
        "loss": o.loss,
        "scale": o.scale,
        "temperature": (1.0 / o.scale) if o.loss == "normsoftmax" and o.scale else None,
        "margin": o.margin,
        "miner": o.miner if o.loss == "triplet" else None,
        "unfreeze": o.unfreeze,
        "options": asdict(o),
        "data": {
            "root": str(Path(data).resolve()) if data is not None else None,
            "images": len(files),
            "train": len(tr),
            "validation": len(va),
            "skipped": skipped,
            "dropped_classes": dropped,
            "suspects": suspects,
            "hash": data_hash,
        },
        "classes": [
            {"name": c, "train": counts.get(i, 0), "validation": counts_val.get(i, 0)} for i, c in enumerate(classes)
        ],
        "epochs_run": epoch,
        "best_epoch": best["epoch"],
        "history": history,
        "metrics": {"before": before, "after": after},
        "training_seconds": round(sum(h["seconds"] for h in history), 1),
        "frozen_seconds": round(frozen_seconds, 1),  # the last (or resumed) pass through the frozen layers
    }
    _write_text_atomic(out / CARD_FILE, json.dumps(card, indent=1))
    _write_text_atomic(out / "MODEL.md", model_card_markdown(card))
    (out / COMPLETE_FILE).write_text(f"{FORMAT} {FORMAT_VERSION}\n")
    shutil.rmtree(out / RUN_DIR, ignore_errors=True)
    return TrainResult(
        out=out,
        classes=classes,
        n_train=len(tr),
        n_val=len(va),
        epochs_run=epoch,
        best_epoch=int(best["epoch"]),
        metrics={"before": before, "after": after},
        seconds=time.perf_counter() - started,
        resumed_from=first_epoch - 1,
        skipped=skipped,
        dropped_classes=dropped,
    )


def _train_members(
    data: str | os.PathLike[str] | None,
    out: Path,
    o: TrainOptions,
    files: list[tuple[Path, str]],
    overwrite: bool,
    resume: bool | None,
    progress: bool,
    say: Any,
    started: float,
) -> TrainResult:
    """``--members N``: N models that differ only in their seed (initialisation, augmented views, sampling and the
    validation split, so between them nearly every image is trained on), used as one by joining their embeddings.

    Members trained apart make partly different mistakes, so their joined embedding tends to beat each of them;
    it costs N times the training, but at indexing time the frozen layers, identical in every member, run once.
    Each member is an ordinary model folder under ``OUT/members/``, so a killed run resumes inside the member it
    was training and finished members are kept.
    """
    if resume and not overwrite and not (out / MEMBERS_DIR).is_dir():
        raise LookalikeError(f"nothing to resume in {out} (no unfinished run there)")
    ckpt = _prepare_out(out, overwrite, None if resume else resume)
    if ckpt is not None:
        raise LookalikeError(
            f"{out} holds an unfinished single-model run; resume it without --members, or pass --overwrite"
        )
    (out / MEMBERS_DIR).mkdir(parents=True, exist_ok=True)
    results: list[TrainResult] = []
    for k in range(o.members):
        mo = TrainOptions(**{**asdict(o), "members": 1, "seed": o.seed + k})
        mdir = out / MEMBERS_DIR / f"seed{mo.seed}"
        if (mdir / COMPLETE_FILE).exists():
            card = json.loads((mdir / CARD_FILE).read_text())
            if _comparable(card["options"]) != _comparable(asdict(mo)):
                raise LookalikeError(
                    f"{mdir} was trained with other options; pass the same options to finish {out}, or --overwrite"
                )
            say(f"member {k + 1}/{o.members} (seed {mo.seed}) already trained")
            results.append(_result_from_card(mdir, card))
            continue
        say(f"member {k + 1}/{o.members} (seed {mo.seed})")
        results.append(train(data, mdir, mo, files=files, resume=None, progress=progress, log=say))

    cards = [json.loads((r.out / CARD_FILE).read_text()) for r in results]
    first = cards[0]
    card = {
        **{k: first[k] for k in ("format", "format_version", "base_model", "resolution", "gem_p", "loss", "scale",
                                 "temperature", "margin", "miner", "unfreeze", "classes")},
        "options": asdict(o),
        "embedding_dim": sum(c["embedding_dim"] for c in cards),
        "members": [str(r.out.relative_to(out)) for r in results],
        "epochs_run": [c["epochs_run"] for c in cards],
        "best_epoch": [c["best_epoch"] for c in cards],
        "metrics": {"members": [c["metrics"] for c in cards]},
        "training_seconds": round(sum(c["training_seconds"] for c in cards), 1),
        "frozen_seconds": round(sum(c["frozen_seconds"] for c in cards), 1),
        "data": {**first["data"], "root": str(Path(data).resolve()) if data is not None else None},
    }  # fmt: skip
    _write_text_atomic(out / CARD_FILE, json.dumps(card, indent=1))
    _write_text_atomic(out / "MODEL.md", members_card_markdown(card, cards))
    (out / COMPLETE_FILE).write_text(f"{FORMAT} {FORMAT_VERSION}\n")
    mean = {
        when: {m: float(np.mean([r.metrics[when][m] for r in results])) for m in results[0].metrics[when]}
        for when in ("before", "after")
    }
    return TrainResult(
        out=out,
        classes=results[0].classes,
        n_train=results[0].n_train,
        n_val=results[0].n_val,
        epochs_run=sum(r.epochs_run for r in results),
        best_epoch=results[0].best_epoch,
        metrics=mean,
        seconds=time.perf_counter() - started,
        resumed_from=results[0].resumed_from,
        skipped=results[0].skipped,
        dropped_classes=results[0].dropped_classes,
        members=results,
    )


def _comparable(options: dict[str, Any]) -> dict[str, Any]:
    """What must match for a finished member to belong to a run: every option but the stopping ones, with options
    added since the member was written (absent from its card) at their defaults."""
    known = {f.name for f in fields(TrainOptions)}
    full = asdict(TrainOptions(**{k: v for k, v in options.items() if k in known}))
    return {k: v for k, v in full.items() if k not in ("epochs", "patience")}


def _result_from_card(path: Path, card: dict[str, Any]) -> TrainResult:
    """The TrainResult of a member finished by an earlier (interrupted) run."""
    return TrainResult(
        out=path,
        classes=[c["name"] for c in card["classes"]],
        n_train=card["data"]["train"],
        n_val=card["data"]["validation"],
        epochs_run=card["epochs_run"],
        best_epoch=card["best_epoch"],
        metrics=card["metrics"],
        seconds=0.0,
        skipped=[tuple(s) for s in card["data"]["skipped"]],
        dropped_classes=card["data"]["dropped_classes"],
    )


def members_card_markdown(card: dict[str, Any], cards: list[dict[str, Any]]) -> str:
    rows = [
        f"| {m} | {c['options']['seed']} | {c['epochs_run']} (best {c['best_epoch']}) | "
        f"{c['metrics']['before']['precision_at_1']:.3f} → {c['metrics']['after']['precision_at_1']:.3f} | "
        f"{c['metrics']['before']['map_at_r']:.3f} → {c['metrics']['after']['map_at_r']:.3f} |"
        for m, c in zip(card["members"], cards, strict=True)
    ]
    lines = [
        f"# Trained lookalike embedding: {len(cards)} members",
        "",
        f"Members trained alike but for the seed; the embedding ({card['embedding_dim']} dimensions) is their "
        "embeddings concatenated (each member's own card is in its folder).",
        "",
        "| member | seed | epochs | validation precision@1 | mAP@R |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Each member validates on its own split, so there is no validation figure for the members together.",
        f"Use it: `lookalike index PHOTOS --model THIS_FOLDER`. Format: {card['format']} version "
        f"{card['format_version']}.",
    ]
    return "\n".join(lines) + "\n"


def model_card_markdown(card: dict[str, Any]) -> str:
    b, a = card["metrics"]["before"], card["metrics"]["after"]
    loss = card["loss"] + (f", λ = {card['scale']:g}" if card.get("scale") else "")
    loss += f", margin {card['margin']:g}" if card.get("margin") else ""
    loss += f", {card['miner']} miner" if card.get("miner") else ""
    lines = [
        "# Trained lookalike embedding",
        "",
        f"- Base model: {card['base_model']} at {card['resolution']} px; "
        + (f"last {card['unfreeze']} block(s) fine-tuned" if card["unfreeze"] else "backbone frozen")
        + f"; {card['head']['type']} head to {card['embedding_dim']} dimensions",
        f"- Loss: {loss}",
        f"- Data: {card['data']['root'] or '(file list)'}: {card['data']['images']} images, "
        f"{len(card['classes'])} classes, {card['data']['train']} train / {card['data']['validation']} validation"
        + (f", {len(card['data']['skipped'])} unreadable skipped" if card["data"]["skipped"] else "")
        + (
            f", classes dropped (one image): {', '.join(card['data']['dropped_classes'])}"
            if card["data"]["dropped_classes"]
            else ""
        ),
        f"- Epochs: {card['epochs_run']} run, best {card['best_epoch']}; {card['training_seconds']} s of training",
        "",
        "| validation | precision@1 | mAP@R |",
        "|---|---|---|",
        f"| backbone (before) | {b['precision_at_1']:.3f} | {b['map_at_r']:.3f} |",
        f"| trained (after) | {a['precision_at_1']:.3f} | {a['map_at_r']:.3f} |",
        "",
        "Classes: " + ", ".join(f"{c['name']} ({c['train']}+{c['validation']})" for c in card["classes"]),
        "",
        "Use it: `lookalike index PHOTOS --model THIS_FOLDER`. Curves: curves.png; t-SNE: tsne.png.",
        f"Format: {card['format']} version {card['format_version']}.",
    ]
    return "\n".join(lines) + "\n"
