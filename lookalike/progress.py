"""Progress bars with throughput and ETA on stderr, or nothing at all when quiet.

Library calls take ``progress=False`` by default so embedding lookalike in a program prints nothing; the CLI turns
bars on unless ``--quiet``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Protocol


class Ticker(Protocol):
    def advance(self, n: int = 1) -> None: ...

    def total(self, n: int) -> None: ...


class _Null:
    def advance(self, n: int = 1) -> None:
        pass

    def total(self, n: int) -> None:
        pass


class _Rich:
    def __init__(self, progress, task) -> None:
        self._p, self._t = progress, task

    def advance(self, n: int = 1) -> None:
        self._p.advance(self._t, n)

    def total(self, n: int) -> None:
        self._p.update(self._t, total=n)


@contextlib.contextmanager
def bar(description: str, total: int | None, enabled: bool, unit: str = "images") -> Iterator[Ticker]:
    if not enabled:
        yield _Null()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class Rate(TextColumn):
        def render(self, task):
            from rich.text import Text

            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.1f} {unit}/s" if speed else f"– {unit}/s", style="cyan")

    console = Console(file=sys.stderr)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        Rate(""),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield _Rich(progress, task)
