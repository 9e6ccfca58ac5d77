"""Load on the web API: concurrent clients uploading room photos to ``POST /api/search`` over loopback.

The server runs in its own process (``lookalike serve``, exactly as a user starts it) over the shared index of
../shared/data/rooms; the clients are httpx coroutines in this process. A 1-client run first gives the latency of a
search with no queueing, then 8 clients for 30 s measure throughput, tail latency and errors. The server's RSS is
read from /proc at start-up, after a warm-up, during the run and at the end: memory must stay flat.

With ``--precisions fp32,int8`` the same runs are made against the rooms index embedded at each precision (the
int8 one calibrated on 64 of its photos; the server runs that index's quantized model), one after the other.

Run: ``flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.server_load [--seconds 30] [--clients 8]
[--precisions fp32,int8]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import dataset, shared_index
from bench.report import index_settings, markdown_table, write_section

NAME = "server_load"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(index_dir: Path, port: int, workers: int, token: str | None = None) -> tuple[subprocess.Popen, float]:
    cmd = [sys.executable, "-m", "lookalike.cli", "serve", "--index", str(index_dir), "--port", str(port)]
    cmd += ["--workers", str(workers)]
    env = {**os.environ, "LOOKALIKE_TOKEN": token} if token else None
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.perf_counter()
    deadline = started + 180
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", headers=auth, timeout=2).status_code == 200:
                return proc, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("server did not become healthy in 180 s")


async def load(
    url: str,
    photos: list[tuple[str, bytes]],
    clients: int,
    seconds: float,
    pid: int,
    headers: dict[str, str] | None = None,
) -> tuple[list[float], int, list[str], list[float], float]:
    """``clients`` loops posting photos for ``seconds``; returns latencies (s), errors, error samples, RSS samples."""
    latencies: list[float] = []
    errors = 0
    samples: list[str] = []
    rss: list[float] = []
    stop = time.perf_counter() + seconds

    async def client(c: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        i = c
        while time.perf_counter() < stop:
            name, data = photos[i % len(photos)]
            i += clients
            t0 = time.perf_counter()
            try:
                r = await http.post(url, files={"file": (name, data, "image/jpeg")}, data={"k": "5", "mode": "all"})
                ok = r.status_code == 200 and len(r.json()["matches"]) == 5
                if not ok and len(samples) < 5:
                    samples.append(f"{r.status_code}: {r.text[:120]}")
            except httpx.HTTPError as exc:
                ok = False
                if len(samples) < 5:
                    samples.append(repr(exc))
            latencies.append(time.perf_counter() - t0)
            errors += not ok

    async def watch() -> None:
        while time.perf_counter() < stop:
            rss.append(rss_mb(pid))
            await asyncio.sleep(min(5.0, max(0.1, stop - time.perf_counter())))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60, headers=headers) as http:
        t0 = time.perf_counter()
        await asyncio.gather(watch(), *(client(c, http) for c in range(clients)))
        elapsed = time.perf_counter() - t0
    return latencies, errors, samples, rss, elapsed


def stop_server(proc: subprocess.Popen) -> None:
    """Ctrl-C as a user would (uvicorn shuts down cleanly), then kill if it has not gone in 15 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def summarise(label: str, clients: int, lat: list[float], errors: int, elapsed: float) -> list[object]:
    ms = np.array(lat) * 1000
    return [
        label, clients, len(lat), f"{len(lat) / elapsed:.1f}", f"{np.percentile(ms, 50):.0f}",
        f"{np.percentile(ms, 90):.0f}", f"{np.percentile(ms, 99):.0f}", f"{ms.max():.0f}", errors,
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--photos", type=int, default=200, help="distinct room photos the clients upload")
    ap.add_argument("--single-seconds", type=float, default=10, help="length of the 1-client run")
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--workers", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2],
                    help="server --workers settings to compare, e.g. 1,2")  # fmt: skip
    ap.add_argument("--precisions", default="fp32", help="index precisions to compare, e.g. fp32,int8")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()

    precisions = args.precisions.split(",")
    indexes = {}
    for precision in precisions:
        # the fp32 index is the one every benchmark shares (built before int8 existed, or with precision explicit)
        index = shared_index("rooms") if precision == "fp32" else shared_index("rooms", precision=precision)
        if index.store.meta.get("precision", "fp32") != precision:
            index = shared_index("rooms", precision=precision)
        indexes[precision] = index
    rooms = dataset("rooms")
    files = sorted(rooms.glob("*/*.jpg"))
    random.Random(0).shuffle(files)
    photos = [(p.name, p.read_bytes()) for p in files[: args.photos]]

    rows: list[list[object]] = []
    memory: list[list[object]] = []
    notes: list[str] = []
    errors_total = 0
    by_run: dict[tuple[str, int], tuple[float, float, float]] = {}
    for precision, workers in [(p, w) for p in precisions for w in args.workers]:
        index = indexes[precision]
        port = free_port()
        proc, startup = start_server(index.store.path, port, workers)
        pid = proc.pid
        url = f"http://127.0.0.1:{port}/api/search"
        try:
            rss_started = rss_mb(pid)
            asyncio.run(load(url, photos, 2, args.warmup, pid))  # warm-up: allocator pools, threads, connections
            rss_warm = rss_mb(pid)
            one = asyncio.run(load(url, photos, 1, args.single_seconds, pid))
            many = asyncio.run(load(url, photos, args.clients, args.seconds, pid))
            rss_end = rss_mb(pid)
            alive = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200
        finally:
            stop_server(proc)
        tag = f"--workers {workers}" if len(precisions) == 1 else f"{precision}, --workers {workers}"
        rows.append(summarise(f"{tag}: 1 client, {args.single_seconds:g} s", 1, one[0], one[1], one[4]))
        rows.append(
            summarise(f"{tag}: {args.clients} clients, {args.seconds:g} s", args.clients, many[0], many[1], many[4])
        )
        memory.append(
            [tag, f"{startup:.1f}", f"{rss_started:.0f}", f"{rss_warm:.0f}", ", ".join(f"{v:.0f}" for v in many[3]),
             f"{rss_end:.0f}", "yes" if alive else "NO"]
        )  # fmt: skip
        errors_total += one[1] + many[1]
        ms = np.array(many[0]) * 1000
        by_run[precision, workers] = (len(many[0]) / many[4], np.percentile(ms, 50), np.percentile(ms, 99))
        samples = one[2] + many[2]
        notes.append(
            f"With {tag}, {args.clients} clients get {len(many[0]) / many[4] / (len(one[0]) / one[4]):.2f}× the "
            f"requests/s of one client, at {np.median(many[0]) / np.median(one[0]):.2f}× its median latency"
            + (f"; error samples: {'; '.join(samples)}" if samples else "")
            + "."
        )

    header = ["run", "clients", "requests", "requests/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"]
    body = "\n".join(
        [
            f"## Web API under load (`{NAME}`)",
            "",
            f"`lookalike serve` in its own process over the rooms index ({len(index)} images, "
            f"{index.store.meta['model']['name']}, {index.store.meta['pooling']['name']} pooling, "
            f"{index.store.meta['resolution']} px, embedded at {' and at '.join(precisions)}); httpx clients in the benchmark process on the same "
            f"{os.cpu_count()} cores, each uploading one of {len(photos)} room photos (416×416 JPEG, ~25 KB) to "
            "`POST /api/search` with k=5 as soon as its previous answer arrives. `--workers` is how many searches "
            f"the server runs at once (default: the number of cores, {os.cpu_count()}).",
            "",
            markdown_table(header, rows),
            "",
            markdown_table(
                [
                    "server",
                    "start-up s",
                    "RSS after start-up MB",
                    f"after {args.warmup:g} s warm-up",
                    f"during the {args.clients}-client run (every 5 s)",
                    "at the end",
                    "healthy after",
                ],
                memory,
            ),
            "",
            f"Errors: {errors_total} (any response other than 200 with 5 matches counts). Start-up is process "
            "start to a healthy `/api/health`: index, model and FAISS loaded once, one warm-up inference.",
            " ".join(notes),
            *(
                [""]
                + [
                    f"- {p} against {precisions[0]}, {args.clients} clients, --workers {w}: "
                    f"**{by_run[p, w][0] / by_run[precisions[0], w][0]:.2f}×** the requests/s "
                    f"({by_run[precisions[0], w][0]:.1f} → {by_run[p, w][0]:.1f}); p50 "
                    f"{by_run[precisions[0], w][1]:.0f} → {by_run[p, w][1]:.0f} ms, p99 "
                    f"{by_run[precisions[0], w][2]:.0f} → {by_run[p, w][2]:.0f} ms."
                    for p in precisions[1:]
                    for w in args.workers
                ]
                if len(precisions) > 1
                else []
            ),
        ]
    )
    if not args.no_write:
        settings = {
            **index_settings(index.store.meta),
            "data": f"rooms index, {len(index)} images; {len(photos)} query photos",
            "k": 5,
            "clients": f"1 for {args.single_seconds:g} s, {args.clients} for {args.seconds:g} s",
            "server --workers": ", ".join(map(str, args.workers)),
            "precisions": ", ".join(precisions),
        }
        write_section(NAME, body, settings)
    print(body)


if __name__ == "__main__":
    main()
