"""Pictures a person looks at: search-result grids (more plots join here: t-SNE, confusion matrices, VLAD maps)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from lookalike.errors import ImageError
from lookalike.images import load_image

THUMB = 256


def thumbnail(source: str | os.PathLike[str] | Image.Image, size: int = THUMB) -> np.ndarray:
    """A small RGB array for plotting; an unreadable file becomes a grey tile rather than a failed figure."""
    try:
        img = source.convert("RGB") if isinstance(source, Image.Image) else load_image(source, target=size)
    except ImageError:
        return np.full((size, size, 3), 200, np.uint8)
    img = img.copy()
    img.thumbnail((size, size))
    return np.asarray(img)


def _short(text: str, n: int = 28) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1) :]


def result_grid(results: Sequence, out: str | os.PathLike[str], *, tile: float = 2.4) -> Path:
    """One row per query: the query, then its matches with rank, cosine score and label."""
    rows = len(results)
    cols = 1 + max((len(r.matches) for r in results), default=0)
    fig, axes = plt.subplots(rows, cols, figsize=(tile * cols, tile * rows + 0.3), squeeze=False)
    for r, res in enumerate(results):
        for c in range(cols):
            axes[r][c].axis("off")
        ax = axes[r][0]
        ax.imshow(thumbnail(res.query_image if getattr(res, "query_image", None) is not None else res.query))
        title = "query"
        if res.query_class:
            title += f"\n{res.query_class} ({res.class_source})"
        ax.set_title(title, fontsize=9, fontweight="bold")
        for c, m in enumerate(res.matches, start=1):
            ax = axes[r][c]
            ax.imshow(thumbnail(m.path))
            label = f"\n{m.label}" if m.label else ""
            ax.set_title(f"#{m.rank}  {m.score:.3f}{label}", fontsize=9)
            ax.text(0.5, -0.06, _short(m.name), transform=ax.transAxes, ha="center", va="top", fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
