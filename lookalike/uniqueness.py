"""How unique each image of a collection is: a score from its distances to its nearest neighbours.

For each image i with L2-normalised vector x_i, let d_i1 ≤ d_i2 ≤ d_i3 be the Euclidean distances
‖x_i − x_j‖ = √(2 − 2·cos) to its ``K`` = 3 nearest *other* images (the kNN graph clustering uses, FAISS, exact up to
200,000 images). Then

    raw_i = 0.6·d_i1 + 0.3·d_i2 + 0.1·d_i3          uniqueness_i = raw_i / max_j raw_j

so 0 means the image has an exact copy (its three nearest are at distance 0) and 1 is the most isolated image of
the collection. This is FiftyOne Brain's ``compute_uniqueness`` (3 neighbours, weights 0.6, 0.3, 0.1, normalised by
the maximum; it takes the mean of the weighted distances, a constant factor that the normalisation removes).
Because of the normalisation the score ranks images *within* one collection; ``raw`` is comparable across
collections described the same way.

The low end lists the most redundant images (copies, bursts, near-identical shots: what ``dedupe`` looks at), the
high end the most isolated (outliers: wrong files, rare subjects, candidates to label first). The scores are stored
in the index folder (``uniqueness.npz``) with a fingerprint of the vectors they came from, like the map: a stale
file is recomputed, never shown as current.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.errors import ConfigError, LookalikeError
from lookalike.io import atomic_write, now_iso
from lookalike.search import knn_graph
from lookalike.store import UNIQUENESS_FILE

if TYPE_CHECKING:
    from lookalike.view import IndexView

K = 3
WEIGHTS = (0.6, 0.3, 0.1)


def uniqueness_scores(
    vectors: np.ndarray, k: int = K, weights: tuple[float, ...] = WEIGHTS
) -> tuple[np.ndarray, np.ndarray]:
    """(uniqueness in [0, 1], raw weighted distance) per row of ``vectors`` (L2-normalised); see the module."""
    if k < 1 or len(weights) < k:
        raise ConfigError(f"k must be between 1 and {len(weights)}, got {k}", setting="k")
    x = np.asarray(vectors, np.float32)
    n = len(x)
    if n < 2:
        raise LookalikeError(f"uniqueness needs at least 2 images, got {n}")
    ids, scores = knn_graph(x, k)
    kk = ids.shape[1]
    cos = np.where(ids >= 0, scores, -1.0).astype(np.float64)
    dist = np.sqrt(np.clip(2.0 - 2.0 * cos, 0.0, 4.0))
    w = np.asarray(weights[:kk], np.float64)
    raw = dist @ w
    top = raw.max()
    scores01 = raw / top if top > 0 else np.zeros_like(raw)
    return scores01.astype(np.float32), raw.astype(np.float32)


@dataclass
class Uniqueness:
    """Per-image uniqueness of an index: ``scores`` (0 = has a copy … 1 = the most isolated) and ``raw`` (the
    weighted distance), rows in index order; ``names`` relative to ``root``."""

    scores: np.ndarray
    raw: np.ndarray
    names: list[str]
    root: str
    fingerprint: str
    k: int = K
    info: dict[str, Any] = field(default_factory=dict)

    def most_redundant(self, n: int = 20) -> list[int]:
        return [int(i) for i in np.argsort(self.scores, kind="stable")[:n]]

    def most_isolated(self, n: int = 20) -> list[int]:
        return [int(i) for i in np.argsort(-self.scores, kind="stable")[:n]]

    def to_dict(self, top: int = 20) -> dict[str, Any]:
        def rows(ids: list[int]) -> list[dict[str, Any]]:
            return [{"path": self.names[i], "id": i, "uniqueness": round(float(self.scores[i]), 4),
                     "raw": round(float(self.raw[i]), 4)} for i in ids]  # fmt: skip

        q = np.quantile(self.scores, [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]) if len(self.scores) else []
        return {
            "images": len(self.scores),
            "k": self.k,
            "weights": list(WEIGHTS[: self.k]),
            "quantiles": {
                f"{p:g}": round(float(v), 4) for p, v in zip((0, 0.1, 0.25, 0.5, 0.75, 0.9, 1), q, strict=True)
            },
            "most_redundant": rows(self.most_redundant(top)),
            "most_isolated": rows(self.most_isolated(top)),
            **self.info,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        header = {"fingerprint": self.fingerprint, "k": self.k, **self.info}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, scores=self.scores.astype(np.float32), raw=self.raw.astype(np.float32),
                         header=np.frombuffer(json.dumps(header).encode(), np.uint8))  # fmt: skip

        atomic_write(Path(path), write)

    def _repr_html_(self) -> str:
        from lookalike.display import uniqueness_html

        return uniqueness_html(self)


def load_uniqueness(index: IndexView) -> tuple[Uniqueness | None, str | None]:
    """The stored scores and None, or None and why there are none to use (missing, unreadable or stale)."""
    path = index.folder / UNIQUENESS_FILE
    if not path.is_file():
        return None, "this index has no uniqueness scores yet: run `lookalike unique`"
    try:
        with np.load(path) as z:
            header = json.loads(bytes(z["header"]).decode())
            scores, raw = z["scores"], z["raw"]
    except (OSError, ValueError, KeyError) as exc:
        return None, f"{path} is unreadable ({exc}); run `lookalike unique` again"
    if header.get("fingerprint") != index.vectors_fingerprint() or len(scores) != len(index):
        return None, "the uniqueness scores are out of date (the index changed): run `lookalike unique` again"
    info = {k: v for k, v in header.items() if k not in ("fingerprint", "k")}
    return Uniqueness(scores, raw, index.names, str(index.root), header["fingerprint"], int(header["k"]), info), None


def uniqueness(index: IndexView, *, k: int = K, force: bool = False, save: bool = True) -> Uniqueness:
    """Uniqueness of every indexed image (stored scores when current, else computed and stored)."""
    if len(index) < 2:
        raise LookalikeError(f"uniqueness needs at least 2 images; the index at {index.folder} has {len(index)}")
    if not force:
        found, _ = load_uniqueness(index)
        if found is not None and found.k == k:
            return found
    started = time.perf_counter()
    scores, raw = uniqueness_scores(index.vectors, k)
    info = {"seconds": round(time.perf_counter() - started, 3), "created": now_iso()}
    result = Uniqueness(scores, raw, index.names, str(index.root), index.vectors_fingerprint(), k, info)
    if save:
        result.save(index.folder / UNIQUENESS_FILE)
    return result


def uniqueness_sheets(result: Uniqueness, out_dir: str | os.PathLike[str], *, top: int = 20) -> list[Path]:
    """Contact sheets of the ``top`` most redundant and most isolated images: ``most-redundant.png`` and
    ``most-isolated.png`` in ``out_dir``, each image captioned by its score."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(result.root)
    written = []
    for name, ids, title in (
        ("most-redundant.png", result.most_redundant(top), f"{top} most redundant (lowest uniqueness)"),
        ("most-isolated.png", result.most_isolated(top), f"{top} most isolated (highest uniqueness)"),
    ):
        items = [(root / result.names[i], f"{result.scores[i]:.3f}") for i in ids]
        written.append(labelled_grid(items, out / name, title=title))
    return written


def labelled_grid(items: list[tuple[Path, str]], out: Path, *, title: str, cols: int = 5, tile: float = 2.2) -> Path:
    """A grid of images, each titled (its score) with its file name under it."""
    import matplotlib.pyplot as plt

    from lookalike.plots import save_figure, thumbnail

    cols = max(1, min(cols, len(items)))
    rows = max(1, -(-len(items) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(tile * cols, tile * rows + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (path, caption) in zip(axes.ravel(), items, strict=False):
        ax.imshow(thumbnail(path))
        ax.set_title(caption, fontsize=9)
        name = Path(path).name
        ax.text(0.5, -0.06, name if len(name) <= 26 else name[:12] + "…" + name[-12:], transform=ax.transAxes,
                ha="center", va="top", fontsize=7)  # fmt: skip
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out)
