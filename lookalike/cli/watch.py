"""Keep an index up to date while its photo folder changes: ``lookalike watch``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import QuietOpt, app, err, print_report

QuietSecondsOpt = Annotated[
    float, typer.Option(help="Seconds without a change that end a burst of changes (one update per burst).")
]
BurstOpt = Annotated[float, typer.Option(help="Update at the latest this many seconds into a burst that goes on.")]
PollOpt = Annotated[
    bool, typer.Option("--poll", help="Poll the folder instead of inotify (network shares, some mounts).")
]


def make_watcher(photos: Path, index_dir: Path | None, quiet_seconds: float, burst: float, poll: bool, quiet: bool):  # noqa: ANN201
    """The watcher the commands run, printing each update's report and any trouble in one line."""
    from lookalike.watch import Watcher, WatchOptions

    def said(message: str) -> None:
        err.print(f"[yellow]watch:[/] {message}", highlight=False, soft_wrap=True, markup=True)

    return Watcher(
        photos, index_dir, progress=False, watch=WatchOptions(quiet=quiet_seconds, burst=burst, poll=poll or None),
        on_update=lambda report: print_report(report, quiet), say=said,
    )  # fmt: skip


@app.command()
def watch(
    photos: Annotated[Path, typer.Argument(help="Folder of photos to follow (searched recursively).")],
    index_dir: Annotated[Path | None, typer.Option("--index", "-i", help="Index folder [PHOTOS/.lookalike].")] = None,
    quiet_seconds: QuietSecondsOpt = 2.0,
    burst: BurstOpt = 30.0,
    poll: PollOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Follow a photo folder and keep its index up to date: new and changed photos embedded, deleted ones dropped,
    moved ones kept without embedding again. Runs until Ctrl-C; a killed run resumes when started again."""
    import signal

    watcher = make_watcher(photos, index_dir, quiet_seconds, burst, poll, quiet)
    err.print(f"watching {watcher.root} (index {watcher.settled.index_path}); Ctrl-C to stop")

    def stop_gently(_signum: int, _frame: object) -> None:
        # the first Ctrl-C asks the loop to end (an update under way commits first; watchfiles sees the event within
        # a second) instead of raising wherever the main thread happens to be; a second one interrupts at once
        watcher.stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, stop_gently)
    try:
        watcher.run()
    except KeyboardInterrupt:
        watcher.stop.set()
    finally:
        signal.signal(signal.SIGINT, previous)
    err.print("stopped: the index holds the last update; `lookalike watch` again resumes")
