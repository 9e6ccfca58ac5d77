"""Pooling dense local features (N, C, h, w) into one L2-normalised vector per image.

Estimators in scikit-learn's shape: ``fit`` where something is learnt from the user's images (VLAD vocabularies,
PCA-whitening), ``transform`` to describe. ``valid`` gives each image's (rows, cols) of real, non-padded feature
cells, so letterboxed images of any aspect ratio pool only over their own content.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.io import atomic_write


def _npz(**arrays: np.ndarray) -> bytes:
    """Arrays as the bytes of an ``.npz`` file (no pickle), ready for :func:`lookalike.io.atomic_write`."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


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

    def __init__(self, p: float = 3.0, eps: float = 1e-6, include_padding: bool = False) -> None:
        if p <= 0:
            raise LookalikeError(f"GeM power must be positive, got {p}")
        self.p = float(p)
        self.eps = eps
        # Pool every cell of the map, letterbox padding included: what a trained model's graph computes, since it
        # sees only pixels (lookalike.models.trained); training pools its input features the same way.
        self.include_padding = bool(include_padding)

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"name": self.name, "p": self.p}
        if self.include_padding:  # only when set, so the configs indexes stored before stay as they were
            cfg["include_padding"] = True
        return cfg

    def output_dim(self, dim_in: int) -> int:
        return dim_in

    def transform(self, features: np.ndarray, cells: np.ndarray | None = None) -> np.ndarray:
        if self.include_padding:
            cells = None
        x = np.power(np.maximum(features, self.eps), self.p)
        if cells is None or np.all(cells == features.shape[2:]):
            pooled = x.mean(axis=(2, 3))
        else:
            pooled = np.stack([d.mean(axis=0) for d in local_descriptors(x, cells)])
        return l2_normalize(np.power(pooled, 1.0 / self.p))


VOCAB_FILE = "vocab.npz"
PCA_FILE = "pca.npz"


def _valid_mask(cells: np.ndarray | None, n: int, fh: int, fw: int) -> np.ndarray:
    """(N, fh*fw) 1.0 where a feature cell sees the image's content, 0.0 on letterbox padding."""
    if cells is None:
        return np.ones((n, fh * fw), np.float32)
    rows = np.arange(fh)[None, :, None] < cells[:, 0, None, None]
    cols = np.arange(fw)[None, None, :] < cells[:, 1, None, None]
    return (rows & cols).reshape(n, fh * fw).astype(np.float32)


class VLADPooling:
    """VLAD over a vocabulary of local-descriptor centres, as AnyLoc aggregates DINOv2 patch features.

    Local descriptors are L2-normalised and clustered with spherical k-means (cosine), so the vocabulary describes
    directions in feature space. Each descriptor is assigned to its nearest centre (hard) or softly (softmax of
    ``alpha`` × cosine, NetVLAD-style); per centre the residuals are summed, intra-normalised (so bursty, repeated
    structure such as tiles or book spines cannot dominate) and the whole vector L2-normalised.
    The vocabulary is fitted by :mod:`lookalike.vocab` on a bounded sample, and stored in the index folder as
    ``vocab.npz`` (with its config) so queries use the very same centres.
    """

    name = "vlad"

    def __init__(self, clusters: int = 32, soft: bool = False, alpha: float = 20.0) -> None:
        if int(clusters) < 1:
            raise LookalikeError(f"VLAD needs at least one cluster, got {clusters}")
        if alpha <= 0:
            raise LookalikeError(f"VLAD soft-assignment alpha must be positive, got {alpha}")
        self.clusters = int(clusters)
        self.soft = bool(soft)
        self.alpha = float(alpha)
        self.centres: np.ndarray | None = None  # (K, C), unit rows

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "clusters": self.clusters, "soft": self.soft, "alpha": self.alpha}

    @property
    def needs_fit(self) -> bool:
        return self.centres is None

    def output_dim(self, dim_in: int) -> int:
        return self.clusters * dim_in

    # --- vocabulary ------------------------------------------------------------------------------------------

    def fit(self, descriptors: np.ndarray, seed: int = 0, niter: int = 25) -> VLADPooling:
        """Spherical k-means (FAISS) on an (n, C) sample of local descriptors."""
        import faiss

        x = np.ascontiguousarray(l2_normalize(np.asarray(descriptors, np.float32)))
        x = x[np.isfinite(x).all(axis=1)]
        if len(x) < self.clusters:
            raise LookalikeError(
                f"cannot fit {self.clusters} VLAD clusters on {len(x)} local descriptors; use fewer --clusters "
                "or more images"
            )
        # k-means from random starts can merge two true clusters; restarts are cheap on small samples
        nredo = 5 if len(x) * self.clusters * x.shape[1] < 5e7 else 1
        km = faiss.Kmeans(
            x.shape[1], self.clusters, niter=niter, nredo=nredo, spherical=True, seed=seed, verbose=False,
            max_points_per_centroid=max(256, len(x) // self.clusters + 1),
        )  # fmt: skip
        km.train(x)
        self.centres = l2_normalize(np.asarray(km.centroids, np.float32).reshape(self.clusters, -1))
        return self

    def vocab_hash(self) -> str:
        import hashlib

        if self.centres is None:
            return ""
        return hashlib.blake2b(np.ascontiguousarray(self.centres).tobytes(), digest_size=8).hexdigest()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the vocabulary (centres + config) to a file, or to ``vocab.npz`` inside a folder."""
        if self.centres is None:
            raise LookalikeError("this VLAD pooling has no vocabulary to save; fit it first")
        path = Path(path)
        target = path / VOCAB_FILE if path.is_dir() else path
        return atomic_write(target, _npz(centres=self.centres, config=np.array(json.dumps(self.config()))))

    def load(self, path: str | os.PathLike[str]) -> VLADPooling:
        """Read a vocabulary from a file or an index folder; a folder without one leaves the pooling unfitted."""
        path = Path(path)
        target = path / VOCAB_FILE if path.is_dir() else path
        if path.is_dir() and not target.is_file():
            return self
        centres, _ = read_vocabulary(target)
        if centres.shape[0] != self.clusters:
            raise LookalikeError(f"{target} has {centres.shape[0]} clusters, this pooling wants {self.clusters}")
        self.centres = centres
        return self

    # --- describing ---------------------------------------------------------------------------------------------

    def _check(self, channels: int) -> np.ndarray:
        if self.centres is None:
            raise LookalikeError(
                "VLAD vocabulary missing; fit one with `lookalike vocab fit --index INDEX_DIR` or pass --vocab FILE"
            )
        if self.centres.shape[1] != channels:
            raise LookalikeError(
                f"VLAD vocabulary has {self.centres.shape[1]}-dim centres but the model gives {channels}-dim "
                "features; fit a vocabulary for this model"
            )
        return self.centres

    def _weights(self, x: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """(N, P, C) unit descriptors -> (N, P, K) assignment weights."""
        sims = x @ centres.T
        if self.soft:
            z = self.alpha * (sims - sims.max(axis=-1, keepdims=True))
            w = np.exp(z)
            return w / w.sum(axis=-1, keepdims=True)
        hard = np.zeros_like(sims)
        np.put_along_axis(hard, sims.argmax(axis=-1)[..., None], 1.0, axis=-1)
        return hard

    def assign(self, features: np.ndarray, cells: np.ndarray | None = None) -> list[np.ndarray]:
        """Each image's (rows, cols) grid of nearest-centre ids over its valid cells (for `plot vlad`)."""
        centres = self._check(features.shape[1])
        out = []
        for d, (h, w) in zip(
            local_descriptors(features, cells),
            cells if cells is not None else [features.shape[2:]] * len(features),
            strict=True,
        ):
            out.append(np.argmax(l2_normalize(d.astype(np.float32)) @ centres.T, axis=1).reshape(int(h), int(w)))
        return out

    def transform(self, features: np.ndarray, cells: np.ndarray | None = None, chunk: int = 128) -> np.ndarray:
        n, c, fh, fw = features.shape
        centres = self._check(c)
        out = np.empty((n, self.clusters * c), np.float32)
        for s in range(0, n, chunk):
            f = np.asarray(features[s : s + chunk], np.float32)
            x = l2_normalize(f.reshape(len(f), c, fh * fw).transpose(0, 2, 1))  # (N, P, C)
            mask = _valid_mask(None if cells is None else cells[s : s + chunk], len(f), fh, fw)
            w = self._weights(x, centres) * mask[..., None]
            v = np.einsum("npk,npc->nkc", w, x) - w.sum(axis=1)[..., None] * centres[None]
            v = l2_normalize(v, axis=-1)  # intra-normalisation
            out[s : s + len(f)] = l2_normalize(v.reshape(len(f), -1))
        return out


def read_vocabulary(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Centres and config of a saved vocabulary (``lookalike vocab fit --out`` or an index's vocab.npz)."""
    path = Path(path)
    if not path.is_file():
        raise LookalikeError(f"no VLAD vocabulary at {path}; make one with `lookalike vocab fit --out FILE`")
    try:
        with np.load(path, allow_pickle=False) as data:
            centres = np.asarray(data["centres"], np.float32)
            config = json.loads(str(data["config"]))
    except (OSError, ValueError, KeyError) as exc:
        raise LookalikeError(f"{path}: not a lookalike VLAD vocabulary ({exc})") from None
    if centres.ndim != 2:
        raise LookalikeError(f"{path}: vocabulary centres must be a (clusters, dim) array")
    return centres, config


class PCAWhitening:
    """PCA-whitening of pooled vectors (Jégou & Chum): centre, decorrelate, rescale, cut to ``dim``.

    Component i is scaled by ``(λ_i + shrink · mean(λ))^-power``. Textbook whitening (power 0.5, shrink 0) blows
    up the weakest components, which on a database of a few thousand images are mostly noise: on GeM vectors of
    efficientnet-lite0 it cost about 6 points of room kNN accuracy and took flowers12 mAP@R from 0.59 to 0.07 (trial
    runs of bench/descriptors.py). The default is a partial, regularised whitening (power 0.25, shrink 1), which
    was the best of the variants tried on rooms; power 0 is plain PCA.

    Fitted on the database's own vectors and stored as ``pca.npz`` in the index folder. On incremental updates the
    fitted transform is kept (new images and queries are described with it) until ``lookalike index --rebuild`` or
    ``lookalike vocab fit`` refits it, so every stored vector and every query always share one transform.
    """

    name = "pca-whiten"

    def __init__(
        self, dim: int = 512, power: float = 0.25, shrink: float = 1.0, file: str = PCA_FILE, out: int | None = None
    ) -> None:
        if int(dim) < 1:
            raise LookalikeError(f"--pca needs a positive dimension, got {dim}")
        if not 0 <= power <= 0.5 or shrink < 0:
            raise LookalikeError(f"whitening power must be in [0, 0.5] and shrink >= 0, got {power}, {shrink}")
        self.dim = int(dim)
        self.power = float(power)
        self.shrink = float(shrink)
        self.file = file
        self.out = out
        self.mean: np.ndarray | None = None
        self.projection: np.ndarray | None = None  # (D_in, out), whitening scale folded in

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name, "dim": self.dim, "power": self.power, "shrink": self.shrink, "out": self.out,
            "file": self.file,
        }  # fmt: skip

    def output_dim(self, dim_in: int) -> int:
        return int(self.out) if self.out else min(self.dim, dim_in)

    def fit(self, vectors: np.ndarray, eps: float = 1e-6) -> PCAWhitening:
        """Eigen-decomposition of the covariance, or of the Gram matrix when vectors outnumber images (VLAD)."""
        x = np.asarray(vectors, np.float32)
        n, d = x.shape
        if n < 2:
            raise LookalikeError("PCA-whitening needs at least 2 images in the index")
        mean = x.mean(axis=0, dtype=np.float64)
        xc = x - mean.astype(np.float32)  # products in float32 (BLAS speed), eigen-decomposition in float64
        if d <= n:
            evals, comps = _top_eigen((xc.T @ xc).astype(np.float64) / n, self.dim)
        else:
            evals, u = _top_eigen((xc @ xc.T).astype(np.float64) / n, self.dim)
            keep = evals > evals[0] * 1e-10
            evals, u = evals[keep], u[:, keep]
            comps = (xc.T @ u.astype(np.float32)) / np.sqrt(evals * n).astype(np.float32)
        rank = int(np.sum(evals > max(evals[0], 1e-30) * 1e-10))
        k = max(1, min(self.dim, rank))
        self.out = k
        self.mean = mean.astype(np.float32)
        lam = evals[:k] + eps * evals[0] + self.shrink * float(np.mean(evals[:k]))
        self.projection = (comps[:, :k] * lam**-self.power).astype(np.float32)
        return self

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        if self.projection is None or self.mean is None:
            raise LookalikeError("PCA-whitening is not fitted; rebuild the index with `lookalike index --rebuild`")
        return (np.asarray(vectors, np.float32) - self.mean) @ self.projection

    def save(self, folder: str | os.PathLike[str]) -> Path:
        data = _npz(mean=self.mean, projection=self.projection, config=np.array(json.dumps(self.config())))
        return atomic_write(Path(folder) / self.file, data)

    def load(self, folder: str | os.PathLike[str]) -> PCAWhitening:
        target = Path(folder) / self.file
        try:
            with np.load(target, allow_pickle=False) as data:
                self.mean = np.asarray(data["mean"], np.float32)
                self.projection = np.asarray(data["projection"], np.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise LookalikeError(
                f"{target}: PCA-whitening missing or unreadable ({exc}); rebuild with `lookalike index --rebuild`"
            ) from None
        self.out = self.projection.shape[1]
        return self


def _top_eigen(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenpairs of a symmetric matrix, largest first (only those are computed: much faster)."""
    from scipy.linalg import eigh

    m = matrix.shape[0]
    k = min(k, m)
    evals, evecs = eigh(matrix, subset_by_index=[m - k, m - 1], driver="evr")
    return evals[::-1], evecs[:, ::-1]


POSTS: dict[str, type] = {"pca-whiten": PCAWhitening}


def make_post(config: dict[str, Any], folder: str | os.PathLike[str] | None = None) -> PCAWhitening:
    """Rebuild an index's post-transform from its stored config, loading its fitted state from the index folder."""
    config = dict(config)
    name = config.pop("name")
    if name not in POSTS:
        raise LookalikeError(f"unknown post-transform {name!r} in this index; rebuild it with a newer lookalike")
    post = POSTS[name](**config)
    return post.load(folder) if folder is not None else post


POOLINGS: dict[str, type] = {"mean": MeanPooling, "gem": GeMPooling, "vlad": VLADPooling}


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
