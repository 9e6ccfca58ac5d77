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
from lookalike.io import atomic_write, shown

THUMB = 256


def save_figure(fig: plt.Figure, out: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Write a figure atomically (creating its folder) and free it: pyplot keeps every open figure alive otherwise.

    The format follows the file's extension (PNG without one), as the temporary file written first has none.
    """
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower() or "png"
    try:
        atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=dpi, format=fmt))
    finally:
        plt.close(fig)
    return out


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
    """A file name for a figure: readable (U+FFFD for bytes that are not UTF-8: fonts cannot draw the escapes)
    and at most ``n`` characters, keeping the end, which tells names apart."""
    text = shown(text)
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
    return save_figure(fig, out)


# --- VLAD assignment maps -----------------------------------------------------------------------------------


def cluster_colours(k: int) -> np.ndarray:
    """k distinguishable RGBA colours: tab20 while it lasts, then evenly spaced hues."""
    if k <= 20:
        return plt.get_cmap("tab20")(np.arange(k))
    return plt.get_cmap("hsv")(np.linspace(0, 1, k, endpoint=False))


def vlad_map(index, image: str | os.PathLike[str], out: str | os.PathLike[str], *, alpha: float = 0.55) -> Path:  # noqa: ANN001
    """The picture AnyLoc draws: each patch of ``image`` coloured by its VLAD cluster, cluster colours as a legend.

    The image is described exactly as the index describes queries (same model, resolution and vocabulary), so
    the map shows what the index's vectors are made of.
    """
    from matplotlib.patches import Patch

    from lookalike.aggregate import VLADPooling
    from lookalike.errors import LookalikeError
    from lookalike.images import decode, read_file

    describer = index.describer
    pooling = describer.pooling
    if not isinstance(pooling, VLADPooling):
        raise LookalikeError(
            f"this index uses {pooling.name} pooling; a VLAD map needs an index built with --pooling vlad"
        )
    img = decode(read_file(image), str(image), target=describer.decode_size)[0]
    pixels, (vh, vw) = describer.prepare_image(img)
    feats, cells = describer.features(pixels[None], np.array([[vh, vw]]))
    grid = pooling.assign(feats, cells)[0]
    k = pooling.clusters
    colours = cluster_colours(k)
    shown = pixels[:vh, :vw]
    stride = describer.model.stride
    overlay = colours[np.kron(grid, np.ones((stride, stride), dtype=int))[:vh, :vw]]
    pad_h, pad_w = max(0, vh - overlay.shape[0]), max(0, vw - overlay.shape[1])
    if pad_h or pad_w:  # the last row/column of cells covers a partial patch
        overlay = np.pad(overlay, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2 * vh / max(vw, 1) + 0.8))
    axes[0].imshow(shown)
    axes[0].set_title(_short(Path(str(image)).name, 60), fontsize=10)
    axes[1].imshow(shown)
    axes[1].imshow(overlay[..., :3], alpha=alpha, interpolation="nearest")
    axes[1].set_title(f"VLAD-{k} {'soft' if pooling.soft else 'hard'}: nearest centre per patch", fontsize=10)
    for ax in axes:
        ax.axis("off")
    ids, counts = np.unique(grid, return_counts=True)
    handles = [Patch(color=colours[i], label=f"cluster {i} ({c})") for i, c in zip(ids, counts, strict=True)]
    axes[1].legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="cluster (patches)",
        ncol=1 if len(handles) <= 20 else 2,
    )  # fmt: skip
    fig.tight_layout()
    return save_figure(fig, out)


# --- classification pictures ------------------------------------------------------------------------------------


def confusion_png(labels: Sequence[str], matrix: Sequence[Sequence[int]], out: str | os.PathLike[str]) -> Path:
    """Confusion matrix, rows = true class, coloured by the share of the row (recall) and annotated with counts."""
    m = np.asarray(matrix, dtype=np.float64)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(2.2 + 0.75 * n, 1.8 + 0.65 * n))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=9,
                    color="white" if share[i, j] > 0.6 else "black")  # fmt: skip
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(n), labels, fontsize=9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion (colour: share of the true class)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)


TSNE_EXACT_UP_TO = 300  # exact gradients are quicker than Barnes-Hut for a few hundred points
LEGEND_ENTRIES = 50  # a longer legend is unreadable and pushes the plot out of the figure


def _tsne_layout(x: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE (cosine) of the rows of ``x``; fewer than four points have no layout and are drawn at the origin."""
    from sklearn.manifold import TSNE

    n = len(x)
    if n < 4:
        return np.zeros((n, 2))
    return TSNE(
        2,
        perplexity=float(max(2.0, min(30.0, (n - 1) / 3))),
        metric="cosine",
        init="pca",
        random_state=seed,
        method="exact" if n <= TSNE_EXACT_UP_TO else "barnes_hut",
    ).fit_transform(x)


def tsne_png(
    vectors: np.ndarray,
    labels: Sequence[str | None],
    out: str | os.PathLike[str],
    *,
    extra_vectors: np.ndarray | None = None,
    extra_labels: Sequence[str | None] | None = None,
    beside: Sequence[tuple[str, np.ndarray]] = (),
    max_points: int = 3000,
    min_points: int = 5,
    seed: int = 0,
    title: str = "t-SNE of the index",
) -> Path:
    """2-D t-SNE (cosine) of index vectors (dots) and optional test vectors (crosses), coloured by class.

    ``beside``: (title, vectors) of other embeddings of the same images, one row per row of ``vectors`` (then of
    ``extra_vectors``), each laid out in a panel of its own beside the first with the same points and colours, e.g.
    training's validation images by the backbone and by the trained model. Large sets are subsampled to
    ``max_points`` (index and test in proportion) because t-SNE is O(n log n) per iteration and a picture of 3,000
    points already shows the structure. Fewer than ``min_points`` points are refused.
    """
    rng = np.random.default_rng(seed)
    n_main = len(vectors)
    n_extra = 0 if extra_vectors is None else len(extra_vectors)
    total = n_main + n_extra
    keep = min(1.0, max_points / max(total, 1))
    a = np.sort(rng.choice(n_main, max(1, round(n_main * keep)), replace=False)) if n_main else np.zeros(0, int)
    b = np.sort(rng.choice(n_extra, max(1, round(n_extra * keep)), replace=False)) if n_extra else np.zeros(0, int)
    rows = np.concatenate([a, n_main + b])
    labs = [labels[i] or "unlabelled" for i in a] + ([extra_labels[i] or "unlabelled" for i in b] if n_extra else [])  # type: ignore[index]
    if len(rows) < min_points:
        from lookalike.errors import LookalikeError

        raise LookalikeError(f"t-SNE needs at least {min_points} images, got {len(rows)}")
    stacked = np.concatenate([np.asarray(vectors)] + ([np.asarray(extra_vectors)] if n_extra else []))
    shown = f"{len(rows)} of {total}" if len(rows) < total else f"{total}"
    panels = [(f"{title} ({shown} points)", stacked), *beside]
    classes = sorted(set(labs))
    colours = cluster_colours(len(classes))
    is_test = np.array([False] * len(a) + [True] * len(b))
    lab_arr = np.array(labs, dtype=object)
    fig, axes = plt.subplots(1, len(panels), figsize=(8.5 + 7 * (len(panels) - 1), 7), squeeze=False)
    for ax, (panel_title, x) in zip(axes[0], panels, strict=True):
        xy = _tsne_layout(np.asarray(x)[rows].astype(np.float32), seed)
        for c, colour in zip(classes, colours, strict=True):
            for test, marker, size in ((False, "o", 9), (True, "x", 28)):
                m = (lab_arr == c) & (is_test == test)
                if m.any():
                    ax.scatter(xy[m, 0], xy[m, 1], s=size, color=colour, marker=marker, alpha=0.75, linewidths=1,
                               label=f"{c}{' (test)' if test else ''} ({int(m.sum())})")  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(panel_title, fontsize=10)
    last = axes[0][-1]
    if len(last.get_legend_handles_labels()[0]) <= LEGEND_ENTRIES:
        last.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, markerscale=1.5)
    fig.tight_layout()
    return save_figure(fig, out)


def mistakes_png(
    true_class: str,
    mistakes: Sequence[tuple[str | os.PathLike[str], str, float]],
    out: str | os.PathLike[str],
    *,
    cols: int = 6,
    tile: float = 2.2,
) -> Path:
    """A grid of one class's misclassified images, each titled with the wrong class and its probability."""
    cols = max(2, min(cols, len(mistakes)))
    rows = max(1, -(-len(mistakes) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(tile * cols, tile * rows + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (path, predicted, prob) in zip(axes.ravel(), mistakes, strict=False):
        ax.imshow(thumbnail(path))
        ax.set_title(f"→ {predicted} ({prob:.2f})", fontsize=9)
        ax.text(0.5, -0.06, _short(Path(path).name, 24), transform=ax.transAxes, ha="center", va="top", fontsize=7)
    fig.suptitle(f"{true_class} misclassified as (probability)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out)


def match_png(
    a: str | os.PathLike[str] | Image.Image,
    b: str | os.PathLike[str] | Image.Image,
    matches: Sequence[Sequence[float]],
    sizes: tuple[tuple[int, int], tuple[int, int]],
    *,
    height: int = 360,
    title: str | None = None,
) -> bytes:
    """Two images side by side with their matched keypoints joined: inliers of the geometric fit in green, the
    other tentative matches faintly in red. ``matches`` rows are (xa, ya, xb, yb, inlier) in each image's original
    pixels, whose (width, height) ``sizes`` gives."""
    import io

    from PIL import ImageDraw

    def load(src: str | os.PathLike[str] | Image.Image) -> Image.Image:
        img = src.convert("RGB") if isinstance(src, Image.Image) else load_image(src, target=height)
        return img.resize((max(1, round(img.width * height / img.height)), height))

    ia, ib = load(a), load(b)
    top = 22 if title else 0
    canvas = Image.new("RGB", (ia.width + 8 + ib.width, height + top), (24, 24, 24))
    canvas.paste(ia, (0, top))
    canvas.paste(ib, (ia.width + 8, top))
    draw = ImageDraw.Draw(canvas, "RGBA")
    if title:
        draw.text((6, 4), title, fill=(235, 235, 235))
    sa, sb, dx = ia.width / sizes[0][0], ib.width / sizes[1][0], ia.width + 8
    for xa, ya, xb, yb, inlier in sorted(matches, key=lambda r: bool(r[4])):  # inliers drawn last, on top
        colour = (60, 220, 90, 220) if inlier else (230, 60, 60, 70)
        pa, pb = (xa * sa, ya * sa + top), (dx + xb * sb, yb * sb + top)
        draw.line([pa, pb], fill=colour, width=1)
        for x, y in (pa, pb):
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], outline=colour)
    buf = io.BytesIO()
    canvas.save(buf, "PNG")
    return buf.getvalue()
