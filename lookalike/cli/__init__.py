"""The ``lookalike`` command: one module per command group (``index``, ``search``, ``classify``, ``cluster``,
``dedupe``, ``train``, ``scene``, ``serve``, ``unique``; shared options and printing in ``common``). Each command parses its
options, calls the library and prints; the work is the library's. Heavy packages are imported inside the commands,
so that start-up stays fast (tests/test_cli.py checks it).
"""

from __future__ import annotations

import contextlib
import copy
import sys
from typing import Any

import typer
from rich.markup import escape

# isort: off
# Importing the command modules registers their commands, in this order (the order `lookalike --help` lists them).
from lookalike.cli import index, search  # noqa: F401
from lookalike.cli import classify, cluster, dedupe, scene, serve, train, unique  # noqa: F401
from lookalike.cli.common import app, err

# isort: on
from lookalike.cli.index import pooling_spec
from lookalike.errors import LookalikeError

__all__ = ["app", "main", "pooling_spec"]


def _stand_in(info: Any) -> Any:
    """A command's entry with the same name and help but no options, so that typer builds it for nothing."""

    def stand_in() -> None:  # never run: only the command being run is built in full
        raise AssertionError

    stand_in.__name__, stand_in.__doc__ = info.callback.__name__, info.callback.__doc__
    entry = copy.copy(info)
    entry.callback = stand_in
    return entry


def _lean(typer_app: typer.Typer, args: list[str]) -> typer.Typer:
    """``typer_app`` with only the command ``args`` name built in full, the others as stand-ins with the same name
    and help: typer builds every command's options before parsing (a tenth of a second for ~20 commands), which
    ``--help`` and a one-off ``search`` would pay. The help, the errors and what runs are those of ``typer_app``."""
    name = args[0] if args and not args[0].startswith("-") else None
    lean = copy.copy(typer_app)
    lean.registered_commands = [
        info if (info.name or typer.main.get_command_name(info.callback.__name__)) == name else _stand_in(info)
        for info in typer_app.registered_commands
    ]
    lean.registered_groups = []
    for info in typer_app.registered_groups:
        group = copy.copy(info)
        group.typer_instance = _lean(info.typer_instance, args[1:] if info.name == name else [])
        lean.registered_groups.append(group)
    return lean


def main() -> None:
    import codecs

    from lookalike.io import shown

    # A safety net under the explicit _shown calls: any name with undecodable bytes that still reaches the terminal
    # is printed readably instead of ending the command with a UnicodeEncodeError.
    # (as bytes: the UTF-8 encoder takes only ASCII text from an error handler)
    codecs.register_error("lookalike-shown", lambda e: (shown(e.object[e.start : e.end]).encode(), e.end))  # type: ignore[attr-defined]
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="lookalike-shown")  # type: ignore[union-attr]
    try:
        _lean(app, sys.argv[1:])()
    except LookalikeError as exc:
        message = str(exc)
        setting = getattr(exc, "setting", None)
        if setting and message.startswith(setting):  # the library names settings; here they are flags
            message = "--" + setting.replace("_", "-") + message[len(setting) :]
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print(
            "[yellow]interrupted[/]: what was embedded is saved; run the same command again to resume", soft_wrap=True
        )
        sys.exit(130)
