"""Uniqueness: how isolated each indexed image is, from its nearest neighbours' distances."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lookalike.cli.common import (
    IndexOpt,
    JsonOpt,
    app,
    err,
    open_index,
    out,
    print_json,
    shown,
)


@app.command()
def unique(
    index: IndexOpt = Path(".lookalike"),
    top: Annotated[int, typer.Option(help="How many of the most redundant and most isolated to list.")] = 20,
    sheets: Annotated[
        Path | None, typer.Option(help="Write most-redundant.png and most-isolated.png into this folder.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute even if the stored scores are current.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Uniqueness of every image from its nearest neighbours' distances: the most redundant and the most isolated."""
    from lookalike.uniqueness import uniqueness, uniqueness_sheets

    result = uniqueness(open_index(index), force=force)
    if sheets is not None:
        for p in uniqueness_sheets(result, sheets, top=top):
            err.print(f"sheet: {shown(p)}", highlight=False)
    if as_json:
        print_json(result.to_dict(top))
        return
    d = result.to_dict(top)
    for title, key in (("most redundant", "most_redundant"), ("most isolated", "most_isolated")):
        t = Table("uniqueness", "raw", "path", title=title)
        for r in d[key]:
            t.add_row(f"{r['uniqueness']:.3f}", f"{r['raw']:.3f}", shown(r["path"]))
        out.print(t)
    q = d["quantiles"]
    err.print(
        f"{d['images']:,} images; uniqueness median {q['0.5']:.3f}, 10% below {q['0.1']:.3f}, 90% below "
        f"{q['0.9']:.3f}; stored in the index folder",
        highlight=False,
    )
