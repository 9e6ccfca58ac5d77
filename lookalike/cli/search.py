"""Search: the k most similar indexed images of each query."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
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
from lookalike.errors import LookalikeError
from lookalike.filters import FILTER_FIELD


def filter_option(name: str, *flags: str) -> typer.models.OptionInfo:
    """A search filter's option, its help and metavar from the one declaration (``lookalike.filters.FILTER_FIELDS``)
    that also makes the API's form fields and query parameters."""
    spec = FILTER_FIELD[name]
    return typer.Option(*flags, help=f"{spec.help} Example: {spec.example}.", metavar=spec.metavar)


@app.command()
def search(
    queries: Annotated[list[Path], typer.Argument(help="Query image(s).")],
    index: IndexOpt = Path(".lookalike"),
    k: Annotated[int, typer.Option("-k", "--k", help="Matches per query.")] = 5,
    same_class: Annotated[bool, typer.Option("--same-class", help="Only the query's class.")] = False,
    other_classes: Annotated[bool, typer.Option("--other-classes", help="Only the other classes.")] = False,
    label: Annotated[
        str | None, typer.Option("--class", help="The query's class (else label, folder, prediction).")
    ] = None,
    after: Annotated[str | None, filter_option("after")] = None,
    before: Annotated[str | None, filter_option("before")] = None,
    near: Annotated[str | None, filter_option("near")] = None,
    path: Annotated[str | None, filter_option("path")] = None,
    with_label: Annotated[str | None, filter_option("label", "--label")] = None,
    min_score: Annotated[float | None, filter_option("min_score")] = None,
    as_json: JsonOpt = False,
    grid: Annotated[Path | None, typer.Option(help="Write a PNG of the queries and their matches.")] = None,
    rerank: Annotated[
        bool, typer.Option("--rerank", help="Re-order the top results by geometric verification (local features).")
    ] = False,
    rerank_depth: Annotated[int, typer.Option(help="--rerank: how many of the top results are verified.")] = 100,
    min_inliers: Annotated[int, typer.Option(help="--rerank: inliers a result needs to count as verified.")] = 15,
    collapse: Annotated[bool, typer.Option("--collapse", help="One result per group of copies (its keeper).")] = False,
) -> None:
    """The k indexed images most similar to each query, best first; the filters act inside the search."""
    from lookalike.filters import SearchFilter

    if same_class and other_classes:
        raise LookalikeError("--same-class and --other-classes exclude each other")
    mode = "same-class" if same_class else "other-classes" if other_classes else "all"
    where = SearchFilter.parse(after=after, before=before, near=near, path=path, label=with_label, min_score=min_score)
    idx = open_index(index)
    verify = None
    if rerank:
        from lookalike.verify import MatchConf
        from lookalike.verify.rerank import RERANK_KEYPOINTS

        verify = MatchConf(min_inliers=min_inliers, keypoints=RERANK_KEYPOINTS)
        missing = len(idx.features.missing())
        if missing:  # the first re-ranked search computes what it needs; say why it is slow
            err.print(f"{missing} indexed image(s) have no local features yet; `lookalike features` computes them all")
    results = idx.search_many(
        [str(q) for q in queries],
        k,
        mode=mode,
        label=label,
        where=where or None,
        rerank=rerank_depth if rerank else 0,
        verify=verify,
        collapse=collapse,
    )
    if as_json:
        for r in results:
            print_json(r.to_dict())
    else:
        for r in results:
            title = shown(r.query) + (f"  [{r.mode}: {r.query_class} ({r.class_source})]" if r.query_class else "")
            table = Table(title=title, title_justify="left")
            table.add_column("#", justify="right")
            table.add_column("score", justify="right")
            if rerank:
                table.add_column("inliers", justify="right")
            table.add_column("label")
            table.add_column("path")
            for m in r.matches:
                extra = [("–" if m.inliers is None else str(m.inliers))] if rerank else []
                table.add_row(str(m.rank), f"{m.score:.4f}", *extra, escape(m.label or ""), shown(m.name) + _copies(m))
            out.print(table)
            if r.note:
                err.print(f"[yellow]{escape(r.note)}[/]", soft_wrap=True)
    if grid:
        from lookalike.plots import result_grid

        err.print(f"grid: {result_grid(results, grid)}")


def _copies(m: object) -> str:
    """ "  (and 4 copies)" for a collapsed match with copies folded into it, else nothing."""
    folded = getattr(m, "folded", None)
    return f"  (and {len(folded)} {'copy' if len(folded) == 1 else 'copies'})" if folded else ""
