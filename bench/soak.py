"""Soak: 8 clients against ``lookalike serve`` over the rooms index for many minutes, in one-minute windows.

What a short load test cannot show: latency creeping up, memory growing, errors appearing after thousands of
requests. The server runs as a user starts it (its own process, loopback, with a token so every request passes the
guard), the clients are httpx coroutines here uploading room photos to ``POST /api/search``; each window reports
requests, errors, p50/p99 and the server's RSS at its end.

Run: ``flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.soak [--minutes 30] [--clients 8]`` (or, on a
shared machine, without the lock and with ``--shared``: the section then says its latencies are inflated).
``--writer`` serves a copy of the rooms folder instead, kept indexed by ``lookalike.watch`` while 20 photos leave
and come back every ``--write-every`` seconds (issue 35: the server follows each commit without a restart).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import threading

import httpx
import numpy as np

from bench.common import dataset, shared_index
from bench.report import index_settings, markdown_table, write_section
from bench.server_load import free_port, load, rss_mb, start_server, stop_server

NAME = "soak"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--window", type=float, default=60, help="seconds per reported window")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--warmup", type=float, default=10)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument(
        "--writer",
        action="store_true",
        help="serve a copy of the rooms folder that a watcher keeps indexed while 20 photos leave or come back "
        "every --write-every seconds (issue 35)",
    )
    ap.add_argument("--write-every", type=float, default=10)
    ap.add_argument(
        "--shared",
        action="store_true",
        help="run without the bench lock beside other work: the section says latencies are inflated",
    )
    args = ap.parse_args()

    writer = Writer(args.write_every) if args.writer else None
    index = writer.index if writer else shared_index("rooms")
    files = sorted(dataset("rooms").glob("*/*.jpg"))
    random.Random(0).shuffle(files)
    photos = [(p.name, p.read_bytes()) for p in files[: args.photos]]
    token = secrets.token_urlsafe()
    auth = {"Authorization": f"Bearer {token}"}
    port = free_port()
    proc, startup = start_server(index.store.path, port, 2, token=token)
    url = f"http://127.0.0.1:{port}/api/search"
    rows: list[list[object]] = []
    total_req = total_err = 0
    samples: list[str] = []
    try:
        if writer:
            writer.start()
        asyncio.run(load(url, photos, 2, args.warmup, proc.pid, auth))
        rss_start = rss_mb(proc.pid)
        windows = max(1, round(args.minutes * 60 / args.window))
        for w in range(windows):
            lat, errors, errs, _, elapsed = asyncio.run(load(url, photos, args.clients, args.window, proc.pid, auth))
            ms = np.array(lat) * 1000
            rss = rss_mb(proc.pid)
            rows.append(
                [w + 1, len(lat), f"{len(lat) / elapsed:.1f}", errors, f"{np.percentile(ms, 50):.0f}",
                 f"{np.percentile(ms, 99):.0f}", f"{rss:.0f}"]
            )  # fmt: skip
            total_req += len(lat)
            total_err += errors
            samples += errs[: max(0, 5 - len(samples))]
            print(rows[-1], flush=True)
        rss_end = rss_mb(proc.pid)
        refused = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code
        alive = httpx.get(f"http://127.0.0.1:{port}/api/health", headers=auth, timeout=5).status_code == 200
    finally:
        stop_server(proc)
        if writer:
            writer.stop()
    growth = (rss_end - rss_start) / rss_start * 100
    minutes = len(rows) * args.window / 60
    trend = ""
    if writer and len(rows) >= 6:  # the warm-up RSS precedes the first commit served: compare the windows too
        rss = [float(r[-1]) for r in rows]
        third = len(rss) // 3
        first, last = float(np.median(rss[:third])), float(np.median(rss[-third:]))
        trend = (
            f" With the writer, window-end RSS moves as snapshots are swapped: median {first:.0f} MB over the first "
            f"{third} windows, {last:.0f} MB over the last {third} ({(last - first) / first * 100:+.1f}%), highest "
            f"{max(rss):.0f} MB."
        )
    body = "\n".join(
        [
            f"## Soak: {args.clients} clients for {minutes:g} minutes (`{NAME}`)",
            "",
            f"`lookalike serve --workers 2` with a token, in its own process over the rooms index ({len(index)} "
            f"images) on loopback; {args.clients} httpx clients on the same {os.cpu_count()} cores each uploading one "
            f"of {len(photos)} room photos to `POST /api/search` (k=5, `Authorization: Bearer`) as soon as its "
            f"previous answer arrives, reported per {args.window:g} s window. Start-up {startup:.1f} s; "
            f"{args.warmup:g} s of 2-client warm-up before the first window.",
            "",
            markdown_table(["window", "requests", "requests/s", "errors", "p50 ms", "p99 ms", "server RSS MB"], rows),
            "",
            f"Total: {total_req:,} requests, {total_err} errors (anything but 200 with 5 matches)"
            + (f" ({'; '.join(samples)})" if samples else "")
            + f". Server RSS {rss_start:.0f} MB after warm-up, {rss_end:.0f} MB at the end ({growth:+.1f}%). "
            f"After the run: healthy {'yes' if alive else 'NO'}; without the token `/api/health` answered "
            f"{refused}. Goal (0 errors, RSS growth under 5%): "
            + ("met." if total_err == 0 and growth < 5 else "NOT met.")
            + trend,
        ]
        + (["", writer.note()] if writer else [])
        + (
            [
                "",
                "Run without the bench lock while other engineers used the same 2 cores (see the load average "
                "below): the latencies and rates are inflated by their work and say little about the server; "
                "errors and memory growth are what this run is about.",
            ]
            if args.shared
            else []
        )
    )
    if not args.no_write:
        settings = {
            **index_settings(index.store.meta),
            "clients": args.clients,
            "minutes": f"{minutes:g}",
            "server --workers": 2,
            "bench lock": "no (machine shared)" if args.shared else "yes",
        }
        write_section(NAME, body, settings)
    print(body)


class Writer:
    """``--writer``: a copy of the rooms folder, indexed, kept up to date by a watcher in this process while a thread
    takes 20 photos out of it and puts them back every ``every`` seconds; the server follows each commit."""

    def __init__(self, every: float) -> None:
        import shutil
        import tempfile
        from pathlib import Path

        from lookalike.index import Index

        self.work = Path(tempfile.mkdtemp(prefix="lookalike-soak-"))
        self.photos = self.work / "photos"
        shutil.copytree(dataset("rooms"), self.photos)
        self.index = Index.build(self.photos, labels="folders", progress=False)
        self.every = every
        self.moves = 0
        self.updates: list[object] = []
        self._stop = threading.Event()

    def start(self) -> None:
        from lookalike.watch import Watcher, WatchOptions

        self.watcher = Watcher(self.photos, watch=WatchOptions(quiet=1), on_update=self.updates.append, progress=False)
        self.watcher.start()
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def _write(self) -> None:
        holding = self.work / "holding"
        holding.mkdir()
        chosen = sorted(self.photos.glob("*/*.jpg"))[::150][:20]
        out = True
        while not self._stop.wait(self.every):
            for f in chosen:
                src, dst = (f, holding / f.name) if out else (holding / f.name, f)
                src.rename(dst)
            out = not out
            self.moves += 1

    def stop(self) -> None:
        import shutil

        self._stop.set()
        self.thread.join()
        self.watcher.stop.set()
        shutil.rmtree(self.work, ignore_errors=True)

    def note(self) -> str:
        return (
            f"With a writer: the server followed a copy of the rooms folder that lost or got back 20 photos every "
            f"{self.every:g} s ({self.moves} times); the watcher committed {len(self.updates)} updates during the "
            "run, which the server followed without a restart."
        )


if __name__ == "__main__":
    main()
