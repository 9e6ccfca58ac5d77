"""The overlay a person looks at: regions filled and outlined per cluster, boxes numbered, a legend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.errors import LookalikeError
from lookalike.scenes.analyse import Scene

NOISE_COLOUR = (0.62, 0.62, 0.62)


def cluster_colours(n: int) -> list[tuple[float, float, float]]:
    """Distinct colours: tab10 then tab20's lighter shades, then evenly spaced hues for very many clusters."""
    import matplotlib

    base = list(matplotlib.colormaps["tab10"].colors)
    base = [c for i, c in enumerate(base) if i != 7]  # tab10's grey is the noise colour
    base += [c for i, c in enumerate(matplotlib.colormaps["tab20"].colors) if i % 2 == 1 and i != 15]
    if n <= len(base):
        return [tuple(c) for c in base[:n]]
    hsv = matplotlib.colormaps["hsv"]
    return [tuple(c) for c in base] + [tuple(hsv(i / (n - len(base)))[:3]) for i in range(n - len(base))]


def _draw_regions(ax: Any, scene: Scene, colours: list[tuple[float, float, float]]) -> None:
    from matplotlib.patches import Polygon

    width, height = scene.width, scene.height
    if scene.maps is not None:
        for c, comp in scene.maps.labels.items():
            fill = np.zeros((*comp.shape, 4), dtype=np.float32)
            fill[comp > 0, :3] = colours[c]
            fill[comp > 0, 3] = 0.28
            ax.imshow(fill, extent=(0, width, height, 0), interpolation="nearest")
    for cl in scene.clusters:
        for r in cl.regions:
            for ring in [r.polygon, *r.holes]:
                if len(ring) >= 3:
                    ax.add_patch(Polygon(ring, closed=True, fill=False, edgecolor=colours[cl.id], linewidth=2.2))


def _draw_boxes(ax: Any, scene: Scene, colours: list[tuple[float, float, float]], font: float) -> None:
    from matplotlib.patches import Rectangle

    for b, c in zip(scene.boxes, scene.labels, strict=True):
        colour = colours[c] if c >= 0 else NOISE_COLOUR
        x1, y1, x2, y2 = b.x1, b.y1, b.x2, b.y2
        ax.add_patch(
            Rectangle(
                (x1, y1),
                x2 - x1,
                y2 - y1,
                fill=False,
                edgecolor=colour,
                linewidth=1.0 if c >= 0 else 1.2,
                linestyle="-" if c >= 0 else "--",
            )
        )
        ax.text(
            x1 + 0.02 * (x2 - x1),
            y1 + 0.02 * (y2 - y1),
            str(b.number),
            color="white",
            fontsize=font,
            fontweight="bold",
            va="top",
            ha="left",
            bbox={"boxstyle": "square,pad=0.15", "facecolor": colour, "edgecolor": "none", "alpha": 0.9},
        )


def _legend_handles(scene: Scene, colours: list[tuple[float, float, float]]) -> list[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [
        Patch(
            facecolor=(*colours[cl.id], 0.45),
            edgecolor=colours[cl.id],
            linewidth=2,
            label=f"cluster {cl.id + 1}: {len(cl.boxes)} boxes, {len(cl.regions)} region{'s' * (len(cl.regions) != 1)}",
        )
        for cl in scene.clusters
    ]
    if scene.noise:
        handles.append(
            Line2D([], [], color=NOISE_COLOUR, linestyle="--", linewidth=1.5, label=f"noise: {len(scene.noise)} boxes")
        )
    if not handles:
        handles.append(Line2D([], [], color="none", label="no boxes"))
    return handles


def draw_scene(
    scene: Scene,
    image: Image.Image,
    out: str | os.PathLike[str],
    *,
    max_side: int = 1600,
) -> Path:
    """Overlay PNG: each cluster's regions filled translucent and outlined in its colour, its boxes numbered;
    noise boxes dashed grey; a legend with each cluster's size and region count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width, height = scene.width, scene.height
    shown = image.convert("RGB")
    scale = min(1.0, max_side / max(width, height))
    if scale < 1:
        shown = shown.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS)
    dpi = 100
    img_w_in, img_h_in = shown.width / dpi, shown.height / dpi
    legend_in = max(2.4, 0.18 * img_w_in)
    fig = plt.figure(figsize=(img_w_in + legend_in, img_h_in), dpi=dpi)
    ax = fig.add_axes((0, 0, img_w_in / (img_w_in + legend_in), 1))
    ax.imshow(np.asarray(shown), extent=(0, width, height, 0), interpolation="bilinear")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    colours = cluster_colours(len(scene.clusters))
    font = max(6.0, min(11.0, 0.012 * shown.height))
    _draw_regions(ax, scene, colours)
    _draw_boxes(ax, scene, colours, font)
    title = f"{len(scene.clusters)} clusters of {len(scene.boxes)} boxes"
    if scene.skipped:
        title += f"\n{len(scene.skipped)} skipped"
    fig.legend(
        handles=_legend_handles(scene, colours),
        loc="upper left",
        bbox_to_anchor=(img_w_in / (img_w_in + legend_in) + 0.01, 0.99),
        fontsize=max(7.0, font * 0.9),
        title=title,
        title_fontsize=max(7.0, font),
        frameon=False,
        borderaxespad=0.0,
    )
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    except OSError as exc:
        raise LookalikeError(
            f"cannot write the overlay to {out}: {exc.strerror or exc}; choose another --out"
        ) from None
    finally:
        plt.close(fig)
    return out
