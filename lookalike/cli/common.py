"""What every command module shares: the typer app, the consoles, the common options and how things are printed."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from lookalike.errors import LookalikeError

if TYPE_CHECKING:
    from lookalike.index import Index

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


def print_json(obj: Any) -> None:
    """One JSON document per line, valid UTF-8 whatever the file names (undecodable bytes show as U+FFFD)."""
    from lookalike.io import shown_json

    sys.stdout.write(json.dumps(shown_json(obj), ensure_ascii=False, default=str) + "\n")


def shown(name: Any) -> str:
    """A path or name for the terminal: readable, with U+FFFD for bytes that are not UTF-8, and no rich markup."""
    from lookalike.io import shown as readable

    return escape(readable(str(name)))


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def print_notes(notes: list[str]) -> None:
    for note in notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)


def open_index(index: Path) -> Index:
    from lookalike.index import Index

    return Index.open(index)


def print_report(report: Any, quiet: bool) -> None:
    r = report
    if r.calibration:
        err.print(escape(r.calibration))
    err.print(
        f"[bold green]indexed[/] {r.total} image files in {r.seconds:.1f}s: {r.added} added, {r.updated} updated, "
        f"{r.unchanged} unchanged"
        + (f", {r.resumed} resumed from an interrupted run" if r.resumed else "")
        + (f", [yellow]{len(r.skipped)} skipped[/]" if r.skipped else "")
        + f"; {r.removed} removed",
        highlight=False,
    )
    for path, reason in r.skipped[:20]:
        err.print(f"  [yellow]skipped[/] {shown(path)}: {escape(reason)}", highlight=False)
    if len(r.skipped) > 20:
        err.print(f"  … and {len(r.skipped) - 20} more (see `lookalike info`)")
    if r.ignored:
        err.print("  ignored (not images): " + ", ".join(f"{n} {shown(ext)}" for ext, n in r.ignored.items()))
    for path, why in r.left_out:
        err.print(f"  left out {shown(path)}/: {why}", highlight=False)


EngineOpt = Annotated[
    str, typer.Option(help="local, or ray: local features and verification on Ray (pip install lookalike[ray]).")
]
AddressOpt = Annotated[
    str | None, typer.Option(help="Ray cluster to join (auto, ray://host:10001); default: start a local Ray.")
]
SkipDecidedOpt = Annotated[
    bool,
    typer.Option(
        "--skip-decided",
        help="--verify: take near-copies and pairs far below the weak threshold as decided by their cosine; "
        "verify (and extract features for) the rest only.",
    ),
]
NumWorkersOpt = Annotated[int | None, typer.Option(help="Ray: CPUs to use (default: all the cluster has).")]


def feature_engine(engine: str, address: str | None, num_workers: int | None) -> Any:
    """``--engine`` as a context manager: None for this machine's threads, or a Ray engine (stopped at the end)."""
    from lookalike.config import ENGINES

    if engine not in ENGINES:
        raise LookalikeError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "local":
        return contextlib.nullcontext()
    from lookalike.distributed import RayFeatureEngine

    return RayFeatureEngine(address, num_workers)
