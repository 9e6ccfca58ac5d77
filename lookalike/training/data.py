"""The data a run learns from: labelled files, their classes, the split, and pixels with their augmentations.

Labels follow the one rule every command shares (:func:`lookalike.images.labelled_files`: the first folder under the
root is the class). A class needs two images (one to learn "same" from, one to check it); files the backbone cannot
read and, when asked, images whose folder label the other images contradict are left out before the split, so
neither training nor validation learns from them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import LookalikeError

AUG_VIEWS = 4  # the plain image and three augmented views per training image, when fine-tuning


def check_classes(files: list[tuple[Path, str]]) -> tuple[list[tuple[Path, str]], list[str]]:
    """Drop classes with a single image (nothing to learn "same" from) and refuse fewer than two classes.

    Returns the files kept and the names of the classes dropped.
    """
    counts = Counter(label for _, label in files)
    dropped = sorted(c for c, n in counts.items() if n < 2)
    kept = [(p, c) for p, c in files if c not in dropped]
    classes = sorted({c for _, c in kept})
    if len(classes) < 2:
        what = f"only {len(classes)} class with at least two images" if classes else "no class with two images"
        detail = f" ({', '.join(dropped)} had one usable image)" if dropped else ""
        raise LookalikeError(f"training needs at least two classes of two or more images; found {what}{detail}")
    return kept, dropped


def stratified_split(labels: np.ndarray, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers (train, validation): every class keeps at least one training and one validation image."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(len(idx) - 1, max(1, round(len(idx) * val_split)))
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train)), np.sort(np.array(val))


def data_hash(files: list[tuple[Path, str]]) -> str:
    """Identity of the labelled files a run learns from: a checkpoint resumes only on the same files and labels."""
    return hashlib.blake2b("\n".join(f"{p}|{c}" for p, c in files).encode(), digest_size=8).hexdigest()


@dataclass
class TrainingData:
    """The files a run learns from, after leaving some out, with their backbone features, labels and split."""

    files: list[tuple[Path, str]]
    pooled: np.ndarray  # (N, C) L2-normalised GeM features of the untrained backbone
    classes: list[str]
    labels: np.ndarray  # (N,) index into classes
    train: np.ndarray  # row numbers
    val: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of unreadable files
    dropped_classes: list[str] = field(default_factory=list)
    suspects: list[dict[str, Any]] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [p for p, _ in self.files]

    @cached_property
    def hash(self) -> str:
        return data_hash(self.files)


def prepare_data(
    files: list[tuple[Path, str]],
    pooled: np.ndarray,
    unreadable: list[tuple[Path, str]],
    *,
    val_split: float,
    seed: int,
    drop_suspects: float = 0.0,
    dropped: list[str] | None = None,
    say: Callable[[str], object] = lambda _msg: None,
) -> TrainingData:
    """Leave out unreadable files (NaN rows of ``pooled``) and, with ``drop_suspects``, images whose folder label
    the others contradict; check the classes again; label and split what is left."""
    ok = ~np.isnan(pooled).any(axis=1)
    files = [f for f, good in zip(files, ok, strict=True) if good]
    pooled = pooled[ok]
    suspects: list[dict[str, Any]] = []
    if drop_suspects:
        # Before the split, so neither training nor validation learns from a label the rest of the data contradicts;
        # judged on the untrained features, as the fine-tuned model would have learnt the wrong label by heart.
        from lookalike.evaluate import label_suspects

        found = label_suspects(pooled, [c for _, c in files], below=drop_suspects)
        keep = np.ones(len(files), bool)
        keep[[s["row"] for s in found]] = False
        suspects = [{"path": str(files[s.pop("row")][0]), **s} for s in found]
        files, pooled = [f for f, k in zip(files, keep, strict=True) if k], pooled[keep]
        say(f"left out {len(suspects)} images whose folder label the others contradict (p < {drop_suspects:g})")
    kept, dropped_now = check_classes(files)
    if dropped_now:
        pooled = pooled[[c not in dropped_now for _, c in files]]
        files = kept
    classes = sorted({c for _, c in files})
    labels = np.array([classes.index(c) for _, c in files])
    train, val = stratified_split(labels, val_split, seed)
    return TrainingData(
        files=files,
        pooled=pooled,
        classes=classes,
        labels=labels,
        train=train,
        val=val,
        skipped=[(str(p), why) for p, why in unreadable],
        dropped_classes=sorted(set(dropped or []) | set(dropped_now)),
        suspects=suspects,
    )


# --- pixels and augmentation (fine-tuning) ---------------------------------------------------------------------


def load_pixels(paths: list[Path], size: int) -> np.ndarray:
    """Letterboxed uint8 pixels (N, size, size, 3) for fine-tuning (files were already checked readable)."""
    from lookalike.images import decode, letterbox, read_file

    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(paths):
        img, _ = decode(read_file(p), str(p), target=size)
        out[i] = letterbox(img, size)[0]
    return out


def augment(pixels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
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


def random_crop(maps: np.ndarray, smallest: float, rng: np.random.Generator) -> np.ndarray:
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
