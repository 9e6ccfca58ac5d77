"""Serve the web page and JSON API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import (
    IndexOpt,
    app,
    err,
)


@app.command()
def serve(
    index: IndexOpt = Path(".lookalike"),
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted upload, in MB.")] = 20,
    workers: Annotated[int | None, typer.Option(help="Searches run at once (default: CPU cores).")] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="LOOKALIKE_TOKEN",
            show_envvar=True,
            help="Secret every API call needs (Bearer header, or typed once on the page); required off loopback.",
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Serve a non-loopback --host without a token (anyone on the network).")
    ] = False,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allow browser pages from this origin to call the API (repeatable).")
    ] = None,
) -> None:
    """Serve the web page and JSON API (OpenAPI docs at /docs) over an index."""
    from lookalike.server.app import serve as run_server

    err.print(f"loading the index at {index} and its model …")
    run_server(
        index,
        host=host,
        port=port,
        max_upload_mb=max_upload_mb,
        workers=workers,
        token=token,
        insecure=insecure,
        cors_origins=cors_origin or (),
    )
