"""Pooling dense local features (N, C, h, w) into one L2-normalised vector per image.

Estimators in scikit-learn's shape: ``fit`` where something is learnt from the user's images (VLAD vocabularies,
PCA-whitening), ``transform`` to describe. ``valid`` gives each image's (rows, cols) of real, non-padded feature
cells, so letterboxed images of any aspect ratio pool only over their own content.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from lookalike.errors import LookalikeError


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def valid_cells(valid_px: np.ndarray, stride: int, fh: int, fw: int) -> np.ndarray:
    """Pixel (h, w) of each image's content -> number of feature rows/cols that see it (at least one)."""
    cells = np.ceil(np.asarray(valid_px, dtype=np.float64) / stride).astype(np.int64)
    cells[:, 0] = np.clip(cells[:, 0], 1, fh)
    cells[:, 1] = np.clip(cells[:, 1], 1, fw)
    return cells


def local_descriptors(features: np.ndarray, cells: np.ndarray | None) -> list[np.ndarray]:
    """Per image, its valid local descriptors as an (n_i, C) array."""
    n, c, fh, fw = features.shape
    out = []
    for i in range(n):
        h, w = (fh, fw) if cells is None else cells[i]
        out.append(features[i, :, :h, :w].reshape(c, -1).T)
    return out


class Pooling(Protocol):
    name: str
    dim_in: int

    def config(self) -> dict[str, Any]: ...

    @property
    def needs_fit(self) -> bool: ...

    def output_dim(self, dim_in: int) -> int: ...

    def transform(self, features: np.ndarray, cells: np.ndarray | None = None) -> np.ndarray: ...


class MeanPooling:
    """Global average pooling: the ImageNet classifier's own view of the image."""

    name = "mean"
    needs_fit = False

    def config(self) -> dict[str, Any]:
        return {"name": self.name}

    def output_dim(self, dim_in: int) -> int:
        return dim_in

    def transform(self, features: np.ndarray, cells: np.ndarray | None = None) -> np.ndarray:
        if cells is None or np.all(cells == features.shape[2:]):
            return l2_normalize(features.mean(axis=(2, 3)))
        return l2_normalize(np.stack([d.mean(axis=0) for d in local_descriptors(features, cells)]))


class GeMPooling:
    """Generalised mean (Radenović et al.): p=1 is mean, p→∞ max; p=3 favours strong local activations."""

    name = "gem"
    needs_fit = False

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        if p <= 0:
            raise LookalikeError(f"GeM power must be positive, got {p}")
        self.p = float(p)
        self.eps = eps

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "p": self.p}

    def output_dim(self, dim_in: int) -> int:
        return dim_in

    def transform(self, features: np.ndarray, cells: np.ndarray | None = None) -> np.ndarray:
        x = np.power(np.maximum(features, self.eps), self.p)
        if cells is None or np.all(cells == features.shape[2:]):
            pooled = x.mean(axis=(2, 3))
        else:
            pooled = np.stack([d.mean(axis=0) for d in local_descriptors(x, cells)])
        return l2_normalize(np.power(pooled, 1.0 / self.p))


POOLINGS: dict[str, type] = {"mean": MeanPooling, "gem": GeMPooling}


def make_pooling(config: dict[str, Any] | str) -> Pooling:
    """Rebuild a pooling from the config an index stored (or a bare name with default parameters)."""
    if isinstance(config, str):
        config = {"name": config}
    config = dict(config)
    name = config.pop("name")
    if name not in POOLINGS:
        raise LookalikeError(f"unknown pooling {name!r}; choose one of: {', '.join(sorted(POOLINGS))}")
    cls = POOLINGS[name]
    if hasattr(cls, "from_config"):
        return cls.from_config(config)
    return cls(**config)
