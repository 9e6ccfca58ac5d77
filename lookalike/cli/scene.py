"""Packed scenes: which detected boxes hold the same product."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lookalike.cli.common import (
    JsonOpt,
    app,
    err,
    out,
    print_json,
)


@app.command()
def scene(
    image: Annotated[Path, typer.Argument(help="Photo of a packed shelf (or any scene with many objects).")],
    detections: Annotated[
        Path,
        typer.Option("--detections", "-d", help="JSON boxes: {id: {x1, y1, x2, y2}} or a list of \\[x1, y1, x2, y2]."),
    ],
    fmt: Annotated[
        str, typer.Option("--format", help="auto | dict | xyxy | coco (\\[x, y, w, h]; auto reads 4-lists as corners).")
    ] = "auto",
    model: Annotated[str | None, typer.Option(help="Backbone name, or a folder from `lookalike train`.")] = None,
    resolution: Annotated[int | None, typer.Option(help="Crop input size in pixels (default: the model's).")] = None,
    min_size: Annotated[int, typer.Option(help="HDBSCAN minimum cluster size (then a second pass with 2).")] = 3,
    gap: Annotated[
        float, typer.Option(help="Closing element as a fraction of the median box size: gaps narrower than it join.")
    ] = 0.5,
    out_png: Annotated[Path | None, typer.Option("--out", "-o", help="Overlay PNG [./<image name>-scene.png].")] = None,
    max_side: Annotated[int, typer.Option(help="Long side of the overlay in pixels (plus the legend).")] = 1600,
    as_json: JsonOpt = False,
) -> None:
    """Cluster the detected objects on a photo by appearance and draw where each product congregates."""
    from lookalike.scenes import run_scene

    result = run_scene(
        image,
        detections,
        fmt=fmt,
        model=model,
        resolution=resolution,
        min_size=min_size,
        gap=gap,
        out=out_png or Path(f"{image.stem}-scene.png"),
        max_side=max_side,
    )
    for s in result.skipped:
        err.print(f"[yellow]skipped box[/] {s['id']}: {s['reason']}", highlight=False)
    for a in result.adjusted:
        err.print(f"[yellow]adjusted box[/] {a['id']}: {a['note']}", highlight=False)
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    if as_json:
        print_json(result.to_dict())
    else:
        table = Table(title=f"{image.name}: {len(result.clusters)} clusters of {len(result.boxes)} boxes")
        table.add_column("cluster", justify="right")
        table.add_column("boxes", justify="right")
        table.add_column("regions", justify="right")
        table.add_column("box numbers")
        numbers = {b.id: b.number for b in result.boxes}
        for c in result.clusters:
            table.add_row(
                str(c.id + 1), str(len(c.boxes)), str(len(c.regions)), " ".join(str(numbers[i]) for i in c.boxes)
            )
        if result.noise:
            table.add_row("noise", str(len(result.noise)), "", " ".join(str(numbers[i]) for i in result.noise))
        out.print(table)
    err.print(f"overlay: {result.overlay}")
