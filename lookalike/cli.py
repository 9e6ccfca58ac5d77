"""The ``lookalike`` command. Each command parses flags, calls the library, and prints; no logic lives here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lookalike.errors import LookalikeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Find, classify and group similar images.",
)
out = Console()
err = Console(stderr=True)
plot_app = typer.Typer(no_args_is_help=True, help="Draw pictures: t-SNE of an index, VLAD assignment maps, ...")
app.add_typer(plot_app, name="plot")

IndexOpt = Annotated[
    Path, typer.Option("--index", "-i", help="Index folder (default: .lookalike here, or PHOTOS_DIR/.lookalike).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _open_index(index: Path):
    from lookalike.index import Index

    return Index.open(index)


def _print_report(report, quiet: bool) -> None:
    r = report
    err.print(
        f"[bold green]indexed[/] {r.total} files in {r.seconds:.1f}s: {r.added} added, {r.updated} updated, "
        f"{r.unchanged} unchanged, {r.removed} removed"
        + (f", {r.resumed} resumed from an interrupted run" if r.resumed else "")
        + (f", [yellow]{len(r.skipped)} skipped[/]" if r.skipped else "")
    )
    for path, reason in r.skipped[:20]:
        err.print(f"  [yellow]skipped[/] {path}: {reason}")
    if len(r.skipped) > 20:
        err.print(f"  … and {len(r.skipped) - 20} more (see `lookalike info`)")


@app.command()
def index(
    photos: Annotated[Path, typer.Argument(help="Folder of photos (searched recursively).")],
    index_dir: Annotated[Path | None, typer.Option("--index", "-i", help="Index folder [PHOTOS/.lookalike].")] = None,
    labels: Annotated[str, typer.Option(help="folders: parent folder name is the class; none.")] = "folders",
    model: Annotated[str | None, typer.Option(help="Backbone name, or a folder from `lookalike train`.")] = None,
    pooling: Annotated[str | None, typer.Option(help="Pooling of dense features: mean, gem, ...")] = None,
    resolution: Annotated[int | None, typer.Option(help="Input size in pixels (long side).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per model call.")] = 32,
    workers: Annotated[int | None, typer.Option(help="Decoding threads.")] = None,
    rebuild: Annotated[bool, typer.Option(help="Re-embed everything (e.g. to change model).")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Index a folder of photos, or bring its index up to date (only new and changed files are embedded)."""
    from lookalike.index import Index

    idx = Index.build(
        photos,
        index_dir,
        labels=labels,
        model=model,
        pooling=pooling,
        resolution=resolution,
        batch_size=batch_size,
        workers=workers,
        progress=not quiet,
        rebuild=rebuild,
    )
    _print_report(idx.report, quiet)
    err.print(f"index: {idx.store.path}")


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
    as_json: JsonOpt = False,
    grid: Annotated[Path | None, typer.Option(help="Write a PNG of the queries and their matches.")] = None,
) -> None:
    """The k indexed images most similar to each query, best first."""
    if same_class and other_classes:
        raise LookalikeError("--same-class and --other-classes exclude each other")
    mode = "same-class" if same_class else "other-classes" if other_classes else "all"
    idx = _open_index(index)
    results = idx.search_many([str(q) for q in queries], k, mode=mode, label=label)
    if as_json:
        for r in results:
            _print_json(r.to_dict())
    else:
        for r in results:
            title = f"{r.query}" + (f"  [{r.mode}: {r.query_class} ({r.class_source})]" if r.query_class else "")
            table = Table(title=title, title_justify="left")
            table.add_column("#", justify="right")
            table.add_column("score", justify="right")
            table.add_column("label")
            table.add_column("path")
            for m in r.matches:
                table.add_row(str(m.rank), f"{m.score:.4f}", m.label or "", m.name)
            out.print(table)
    if grid:
        from lookalike.plots import result_grid

        err.print(f"grid: {result_grid(results, grid)}")


@app.command()
def info(index: IndexOpt = Path(".lookalike"), as_json: JsonOpt = False) -> None:
    """What an index holds: images, model, pooling, vector size, labels, skipped files, disk size."""
    data = _open_index(index).info()
    if as_json:
        _print_json(data)
        return
    t = Table(show_header=False, box=None)
    pooling = data["pooling"]
    pooling_text = ", ".join(f"{k}={v}" for k, v in pooling.items()) if isinstance(pooling, dict) else str(pooling)
    for key, value in [
        ("index", data["index"]),
        ("photos", data["root"]),
        ("images", data["images"]),
        ("model", data["model"]),
        ("pooling", pooling_text),
        ("resolution", data["resolution"]),
        ("vector size", data["dim"]),
        ("labels", ", ".join(f"{k} {v}" for k, v in data["labels"].items()) or "none"),
        ("GPS-tagged", data["gps_tagged"]),
        ("disk size", _human_bytes(data["disk_bytes"])),
        ("updated", data["updated"]),
        ("skipped", len(data["skipped"])),
    ]:
        t.add_row(f"[bold]{key}[/]", str(value))
    out.print(t)
    for s in data["skipped"]:
        out.print(f"  [yellow]skipped[/] {s['path']}: {s['reason']}")
    if data["interrupted_parts"]:
        out.print(
            f"[yellow]an interrupted run left {data['interrupted_parts']} checkpoint(s); run `lookalike index` to finish[/]"
        )


@app.command()
def models() -> None:
    """List the backbones lookalike can use."""
    from lookalike.models import available_models

    for name, desc in sorted(available_models().items()):
        out.print(f"[bold]{name}[/]  {desc}")


@app.command()
def demo(
    photos: Annotated[Path | None, typer.Argument(help="Your own photo folder (default: generated samples).")] = None,
    work: Annotated[Path, typer.Option(help="Where samples, index and pictures go.")] = Path("out/demo"),
    k: Annotated[int, typer.Option("-k")] = 5,
    quiet: QuietOpt = False,
) -> None:
    """The main job end to end: index sample photos (or yours), search with a query, draw the result grid."""
    from lookalike.images import find_images
    from lookalike.index import Index
    from lookalike.plots import result_grid
    from lookalike.samples import make_samples

    if photos is None:
        photos = make_samples(work / "samples")
        queries = sorted((work / "samples-queries").glob("*.jpg"))
        err.print(
            f"sample photos: {photos} ({len(find_images(photos))} images made from photos shipped by dependencies)"
        )
    else:
        queries = find_images(photos)[:: max(1, len(find_images(photos)) // 3)][:3]
    idx = Index.build(photos, work / "index", progress=not quiet)
    _print_report(idx.report, quiet)
    results = idx.search_many([str(q) for q in queries], k)
    for r in results:
        out.print(f"[bold]{r.query}[/]")
        for m in r.matches:
            out.print(f"  #{m.rank} {m.score:.3f} {m.label or '':12} {m.name}")
    err.print(f"grid: {result_grid(results, work / 'results.png')}")


def main() -> None:
    try:
        app()
    except LookalikeError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: what was embedded is saved; run the same command again to resume", soft_wrap=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
