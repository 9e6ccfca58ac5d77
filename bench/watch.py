"""Issue 35 figures: a watched folder taking a burst of new photos, moves and deletes, the watcher's idle CPU, and
search clients against a server that follows the index while it is updated.

1. A 10,000-photo folder (rooms, products, flowers and mirrored rooms from ../shared/data, as JPEGs) indexed by a
   plain ``Index.build``: the embedding rate to compare with.
2. ``lookalike.watch.Watcher`` follows it (inotify, 2 s quiet time); 2,000 more photos (mirrored products) are copied
   into a new subfolder in one burst: seconds from the last file landing until a fresh ``Index.open`` finds all of
   them (searchable), and the watcher's embedding rate.
3. 500 photos moved to another subfolder: how many were embedded again (goal 0). 500 deleted: gone from the index.
4. The watcher idle for ``--idle`` seconds: its process's CPU time over that span (nothing else runs in it).
5. ``lookalike serve`` (its own process) over the index; ``--clients`` search clients by id for ``--concurrency``
   seconds with the index idle, then as long again while a writer moves 100 photos out and back in every few
   seconds (each move one update by the watcher). Each reply carries its commit (``X-Lookalike-Commit``) and is
   checked against that commit's table: the query's name and every match's name at its id. Errors, replies mixing
   two states, p50/p99 idle and during updates.

    flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.watch          # full scale (about 30 minutes)
    .venv/bin/python -m bench.watch --quick                                  # a small run that checks it works
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageOps

from bench.common import dataset
from bench.report import index_settings, markdown_table, write_section
from bench.server_load import free_port, start_server, stop_server
from lookalike import Index
from lookalike.store import Store
from lookalike.watch import Watcher, WatchOptions

NAME = "watch"


def mirrored(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as img:
        ImageOps.mirror(img.convert("RGB")).save(dst, "JPEG", quality=90)


def make_folder(base: Path, incoming: Path, n_base: int, n_burst: int) -> None:
    """``n_base`` photos under ``base`` and ``n_burst`` others under ``incoming`` (a staging folder, not watched)."""
    rooms = sorted(dataset("rooms").glob("*/*.jpg"))
    others = sorted(dataset("products").glob("*/*.jpg")) + sorted(dataset("flowers12").glob("*/*.jpg"))
    plain = (rooms + others)[:n_base]
    for f in plain:
        dst = base / f.parent.parent.name / f.parent.name / f.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst)
    for f in rooms[: max(0, n_base - len(plain))]:
        mirrored(f, base / "mirrored" / f.parent.name / f.name)
    products = sorted(dataset("products").glob("*/*.jpg"))
    for i, f in enumerate(products[:n_burst]):
        mirrored(f, incoming / f"{i:05d}-{f.name}")


def wait_for(cond, timeout: float) -> float:  # noqa: ANN001
    start = time.perf_counter()
    while not cond():
        if time.perf_counter() - start > timeout:
            raise SystemExit("timed out waiting for the watcher")
        time.sleep(0.05)
    return time.perf_counter()


def count(idx: Path) -> int:
    try:
        return len(Store.open(idx))
    except Exception:  # noqa: BLE001 - not there yet
        return -1


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def search_load(url: str, n_ids: int, clients: int, seconds: float, auth: dict, names_at: dict) -> dict:
    """``clients`` loops searching by id; every reply checked against the table of the commit it names."""
    lat: list[float] = []
    errors = mixed = 0
    commits: set[int] = set()
    stop = time.perf_counter() + seconds

    async def client(c: int, http: httpx.AsyncClient) -> None:
        nonlocal errors, mixed
        rng = random.Random(c)
        while time.perf_counter() < stop:
            i = rng.randrange(n_ids)
            t0 = time.perf_counter()
            r = await http.get(url, params={"id": i, "k": 10})
            lat.append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors += 1
                continue
            commit = int(r.headers["x-lookalike-commit"])
            commits.add(commit)
            names = names_at.get(commit)
            body = r.json()
            if (
                names is None
                or body["query"]["name"] != names[i]
                or any(names[m["id"]] != m["name"] for m in body["matches"])
            ):
                mixed += 1

    async with httpx.AsyncClient(timeout=60, headers=auth) as http:
        await asyncio.gather(*(client(c, http) for c in range(clients)))
    ms = np.array(lat) * 1000
    return {"requests": len(lat), "errors": errors, "mixed": mixed, "commits": len(commits),
            "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}  # fmt: skip


def concurrency(idx: Path, photos: Path, watcher: Watcher, names_at: dict, args: argparse.Namespace) -> list[dict]:
    """Idle, then with a writer: the two loads of step 5."""
    import secrets

    token = secrets.token_urlsafe()
    auth = {"Authorization": f"Bearer {token}"}
    port = free_port()
    proc, _ = start_server(idx, port, 2, token=token)
    url = f"http://127.0.0.1:{port}/api/search"
    n_ids = count(idx) - 100  # ids below this exist in every state the writer makes
    try:
        idle = asyncio.run(search_load(url, n_ids, args.clients, args.concurrency, auth, names_at))
        stop = threading.Event()
        moving = sorted((photos / "moved").glob("*.jpg"))[:100]
        holding = photos.parent / "holding"
        holding.mkdir(exist_ok=True)

        def writer() -> None:
            out = True
            while not stop.is_set():
                for f in moving:
                    src, dst = (f, holding / f.name) if out else (holding / f.name, f)
                    src.rename(dst)
                out = not out
                stop.wait(args.write_every)

        thread = threading.Thread(target=writer)
        thread.start()
        busy = asyncio.run(search_load(url, n_ids, args.clients, args.concurrency, auth, names_at))
        stop.set()
        thread.join()
    finally:
        stop_server(proc)
    args.moving = len(moving)
    return [idle, busy]


def describe(args, n_base, n_burst, n_move, idle_s, index_rate, searchable, watch_rate, burst, moved, still,  # noqa: ANN001, ANN201, PLR0913
             idle_cpu, idle, busy):  # fmt: skip
    """The section's text."""
    rows = [
        ["plain `Index.build`", f"{n_base:,} photos", f"{index_rate:.1f} photos/s", ""],
        [f"burst of {n_burst:,} copied in", f"searchable {searchable:.1f} s after the last file landed",
         f"{watch_rate:.1f} photos/s ({watch_rate / index_rate:.0%} of plain)", f"{len(burst)} update(s)"],
        [f"{n_move} moved to another subfolder", f"{sum(r.embedded for r in moved)} re-embedded",
         f"{sum(r.moved for r in moved)} kept by content hash", f"{len(moved)} update(s)"],
        [f"{n_move} deleted", f"{len(still)} still in the index", "", ""],
        [f"idle {idle_s} s", f"watcher CPU {idle_cpu:.2f}% of one core", "", ""],
    ]  # fmt: skip
    conc = [[label, r["requests"], r["errors"], r["mixed"], r["commits"], f"{r['p50']:.0f}", f"{r['p99']:.0f}"]
            for label, r in (("index idle", idle), ("during updates", busy))]  # fmt: skip
    body = "\n".join([
        f"## Watching a folder (`{NAME}`)", "",
        f"A {n_base:,}-photo folder (rooms, products, flowers, mirrored rooms) followed by `lookalike.watch.Watcher` "
        "(inotify, 2 s quiet time, 60 s longest burst):", "",
        markdown_table(["step", "result", "rate", ""], rows), "",
        f"`lookalike serve --workers 2` (own process, following the index) with {args.clients} clients searching by "
        f"id (k=10) for {args.concurrency} s with the index idle, then as long while a writer moved {args.moving} photos out "
        f"of the folder and back every {args.write_every} s (the watcher committing each); every reply checked "
        "against the table of the commit it names:", "",
        markdown_table(["load", "requests", "errors", "replies mixing two states", "commits served", "p50 ms",
                        "p99 ms"], conc),
    ])  # fmt: skip
    return body


def main() -> None:  # noqa: PLR0915 - one run, step by step
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 photos, bursts of 60, 30 s windows: checks it works")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    n_base, n_burst, n_move, idle_s = (300, 60, 30, 10) if args.quick else (10_000, 2_000, 500, 600)
    args.concurrency = 30 if args.quick else 600
    args.write_every = 3 if args.quick else 10
    work = Path(tempfile.mkdtemp(prefix="lookalike-watch-bench-"))
    photos, incoming, idx = work / "photos", work / "incoming", work / "idx"
    try:
        make_folder(photos, incoming, n_base, n_burst)
        t0 = time.perf_counter()
        built = Index.build(photos, idx, labels="none", progress=False)
        index_rate = len(built) / (time.perf_counter() - t0)
        reports = []
        names_at: dict[int, list[str]] = {}

        def record() -> None:  # the names of each commit, to check replies against
            store = Store.open(idx)
            names_at[store.commit_id] = store.names()

        def on_update(report) -> None:  # noqa: ANN001
            reports.append(report)
            record()

        record()
        watcher = Watcher(photos, idx, watch=WatchOptions(quiet=2, burst=60), on_update=on_update, progress=False)
        thread = watcher.start()
        wait_for(lambda: len(reports) == 1, 600)
        # 2. a burst of new photos
        (photos / "new").mkdir()
        for f in sorted(incoming.iterdir()):
            shutil.copyfile(f, photos / "new" / f.name)
        landed = time.perf_counter()
        searchable = wait_for(lambda: count(idx) == n_base + n_burst, 3600) - landed
        burst = [r for r in reports[1:] if r.embedded]
        watch_rate = sum(r.embedded for r in burst) / sum(r.seconds for r in burst)
        # 3. moves and deletes
        done = len(reports)
        (photos / "moved").mkdir()
        for f in sorted((photos / "new").iterdir())[:n_move]:
            f.rename(photos / "moved" / f.name)
        wait_for(lambda: len(reports) > done and count(idx) == n_base + n_burst, 600)
        moved = reports[done:]
        done = len(reports)
        gone = sorted((photos / "new").iterdir())[:n_move]
        gone_names = {f.relative_to(photos).as_posix() for f in gone}
        for f in gone:
            f.unlink()
        wait_for(lambda: count(idx) == n_base + n_burst - n_move, 600)
        still = gone_names & set(Index.open(idx).names)
        # 4. idle
        cpu0, t_idle = cpu_seconds(), time.perf_counter()
        time.sleep(idle_s)
        idle_cpu = (cpu_seconds() - cpu0) / (time.perf_counter() - t_idle) * 100
        # 5. search clients while the index changes
        idle, busy = concurrency(idx, photos, watcher, names_at, args)
        watcher.stop.set()
        thread.join(30)
        meta = Store.open(idx).meta
    finally:
        shutil.rmtree(work, ignore_errors=True)
    body = describe(args, n_base, n_burst, n_move, idle_s,
                    index_rate, searchable, watch_rate, burst, moved, still, idle_cpu, idle, busy)  # fmt: skip
    print(body)
    if not args.no_write:
        settings = {**index_settings(meta), "photos": n_base, "burst": n_burst, "clients": args.clients,
                    "quick": args.quick}  # fmt: skip
        write_section(NAME, body, settings)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    main()
