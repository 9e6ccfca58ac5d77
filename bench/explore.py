"""Exploring a collection: filtered search latency and recall, the map's layout cost, the Map tab in a browser at
100,000 points, and whether the map keeps neighbourhoods (issue 21).

Parts run separately (each saves its figures under /tmp/lookalike-cache/explore and the section is re-rendered from
all saved parts):
    python -m bench.explore filters     # filtered vs unfiltered search, exact and IVF, 100k and 1M vectors
    python -m bench.explore layout      # `map` layout time and peak memory at 10k and 100k vectors (subprocesses)
    python -m bench.explore browser     # page load and pan frame time with 100k points, headless Chromium
    python -m bench.explore quality     # 10-NN label agreement: 2-D map vs full vectors, rooms and flowers12
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench.common import CACHE
from bench.report import markdown_table, write_section

OUT = CACHE / "explore"
K = 10


def clustered(n: int, dim: int, centres: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """``n`` unit vectors around ``centres`` random centres, as bench/scale.py makes them (cosine ~0.73 within one)."""
    c = np.random.default_rng(12345).normal(size=(centres, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = c[rng.integers(0, centres, m)] + rng.normal(scale=0.6 / np.sqrt(dim), size=(m, dim)).astype(np.float32)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def save(part: str, data: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{part}.json").write_text(json.dumps(data, indent=1))


def merged_rows(part: str, rows: list[dict[str, Any]], key: tuple[str, ...]) -> list[dict[str, Any]]:
    """The stored rows of ``part`` with ``rows`` in place of those with the same ``key`` (a partial re-run keeps
    the rest)."""
    path = OUT / f"{part}.json"
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    new = {tuple(r[k] for k in key) for r in rows}
    return [r for r in old if tuple(r.get(k) for k in key) not in new] + rows


def synthetic_table(n: int, seed: int = 0) -> pa.Table:
    """Metadata like a photo collection's: capture times over three years, GPS around Paris for 70%, two sites."""
    rng = np.random.default_rng(seed)
    t0 = np.datetime64("2021-01-01T00:00:00")
    times = t0 + rng.integers(0, 3 * 365 * 86400, n).astype("timedelta64[s]")
    has_gps = rng.random(n) < 0.7
    lat = np.where(has_gps, 48.8867 + rng.normal(0, 0.05, n), np.nan)
    lon = np.where(has_gps, 2.3431 + rng.normal(0, 0.08, n), np.nan)
    names = [f"site-{'ab'[i % 2]}/{i // 1000:04d}/img_{i:07d}.jpg" for i in range(n)]
    return pa.table(
        {
            "path": names,
            "label": [None] * n,
            "exif_time": pa.array(times.astype(str).tolist(), pa.string()),
            "gps_lat": pa.array(np.where(has_gps, lat, None).tolist(), pa.float64()),
            "gps_lon": pa.array(np.where(has_gps, lon, None).tolist(), pa.float64()),
        }
    )


def time_filter_keeping(columns: Any, share: float) -> Any:
    """A capture-time range (a SearchFilter) that keeps ``share`` of the images."""
    from lookalike.filters import SearchFilter

    t = np.sort(columns.times[~np.isnat(columns.times)])
    start = t[len(t) // 7]
    stop = t[min(len(t) - 1, len(t) // 7 + max(1, int(share * len(columns))) - 1)]
    return SearchFilter.parse(after=start.astype(datetime), before=stop.astype(datetime))


def ms(fn: Any, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def run_filters(args: argparse.Namespace) -> None:
    from lookalike.filters import FilterColumns, SearchFilter
    from lookalike.search import VectorSearch, build_ann

    results = []
    for n, dim, nq in ((100_000, 1280, 40), (1_000_000, 256, 15)):
        print(f"{n} x {dim}: vectors", flush=True)
        x = clustered(n, dim, max(100, n // 250), seed=1)
        q = clustered(nq, dim, max(100, n // 250), seed=99)
        table = synthetic_table(n)
        t = time.perf_counter()
        columns = FilterColumns.from_table(table)
        convert_s = time.perf_counter() - t
        flat = VectorSearch(x)
        print(f"{n}: ivf", flush=True)
        t = time.perf_counter()
        ivf_index, info = build_ann(x, "ivf")
        build_s = time.perf_counter() - t
        ivf = VectorSearch(None, ann=ivf_index, params=info)
        select_ms = {}
        for name, f in (
            ("near 2 km", SearchFilter.parse(near="48.8867,2.3431,2")),
            ("path site-a/**", SearchFilter.parse(path="site-a/**")),
        ):
            select_ms[name] = round(float(np.median(ms(lambda f=f, c=columns: f.select(c), 3))), 1)
        base: dict[str, float] = {}
        for kind, searcher in (("exact", flat), ("ivf", ivf)):
            base[kind] = float(
                np.median([ms(lambda i=i, s=searcher, q=q: s.search(q[i : i + 1], K), 1)[0] for i in range(nq)])
            )
        for share in (0.5, 0.05, 0.001):
            f = time_filter_keeping(columns, share)
            sel = ms(lambda f=f, c=columns: f.select(c), 3)
            allowed, _ = f.select(columns)
            row: dict[str, Any] = {
                "n": n, "dim": dim, "share": share, "kept": len(allowed), "select_ms": round(float(np.median(sel)), 1),
            }  # fmt: skip
            found = {}
            for kind, searcher in (("exact", flat), ("ivf", ivf)):
                times, ids = [], []
                for i in range(nq):
                    t = time.perf_counter()
                    _, got = searcher.search(q[i : i + 1], K, allowed=allowed)
                    times.append((time.perf_counter() - t) * 1000)
                    ids.append(got[0])
                found[kind] = ids
                row[f"{kind}_ms"] = round(float(np.median(times)), 2)
                row[f"{kind}_base_ms"] = round(base[kind], 2)
                row[f"{kind}_full_k"] = bool(all((g >= 0).sum() == min(K, len(allowed)) for g in ids))
                outside = set(np.concatenate(ids).tolist()) - set(allowed.tolist()) - {-1}
                row[f"{kind}_outside"] = len(outside)
            hits = [
                len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (b >= 0).sum())
                for a, b in zip(found["ivf"], found["exact"], strict=True)
            ]
            row["ivf_recall"] = round(float(np.mean(hits)), 4)
            print(row, flush=True)
            results.append(row)
        results.append({"n": n, "dim": dim, "info": {"nlist": info.get("nlist"), "nprobe": info.get("nprobe"),
                        "build_s": round(build_s, 1), "convert_s": round(convert_s, 2), "select_ms": select_ms}})  # fmt: skip
        del flat, ivf, ivf_index, x
    save("filters", {"rows": results, "queries": "fresh points from the same distribution"})


def _layout_child(n: int, method: str, out: str) -> None:
    """In a fresh process (so peak RSS is this layout's own): lay out n clustered vectors, save xy and timings."""
    from lookalike.explore import layout_2d

    x = clustered(n, 1280, max(50, n // 200), seed=5)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    warm = time.perf_counter()
    layout_2d(x[:200], method)  # numba compiles UMAP's kernels on first use in a process; timed separately
    warm_s = time.perf_counter() - warm
    t = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    xy = layout_2d(x, method)
    secs = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    np.save(out, xy)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": n, "method": method, "seconds": round(secs, 1), "cpu_s": round(cpu, 1), "warmup_s": round(warm_s, 1),
                      "peak_mb": round(peak), "vectors_mb": round(x.nbytes / 2**20), "before_mb": round(base)}))  # fmt: skip


def run_layout(args: argparse.Namespace) -> None:
    rows = []
    plan = [(100_000, "umap"), (10_000, "umap"), (10_000, "pca"), (100_000, "pca"), (10_000, "tsne")]
    if args.sizes:
        plan = [p for p in plan if p[0] in args.sizes]
    for n, method in plan:
        out = OUT / f"xy-{method}-{n}.npy"
        OUT.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "bench.explore", "_layout", str(n), method, str(out)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["wall_s"] = round(time.perf_counter() - t, 1)
        print(row, flush=True)
        rows.append(row)
        save("layout", {"rows": merged_rows("layout", rows, ("n", "method"))})  # the next may not finish


def fake_index(n: int, folder: Path) -> Any:
    """An index folder of ``n`` synthetic rows (no image files), made with this machine's default model settings so
    the server starts on it; its map is the 100k UMAP layout from the layout part (or PCA if that is missing)."""
    from lookalike.config import IndexConfig
    from lookalike.embed import Describer
    from lookalike.explore import CollectionMap
    from lookalike.index import Index
    from lookalike.search import vectors_fingerprint
    from lookalike.store import MAP_FILE, Store, make_table

    describer = Describer.from_config(IndexConfig())
    dim = describer.dim
    centres = max(50, n // 200)
    x = clustered(n, dim, centres, seed=5)
    rng = np.random.default_rng(0)
    t0 = datetime(2021, 1, 1)
    cls = np.random.default_rng(12345).integers(0, 20, centres)
    assign = np.argmax(x @ clustered(centres, dim, centres, seed=5).T, axis=1)  # nearest centre-ish, for labels
    rows = [
        {"path": f"class_{cls[assign[i]] :02d}/img_{i:07d}.jpg", "size": 1, "mtime_ns": 1, "hash": f"{i:040x}",
         "width": 640, "height": 480, "exif_time": (t0 + timedelta(seconds=int(rng.integers(0, 9e7)))).isoformat()}
        for i in range(n)
    ]  # fmt: skip
    meta = {"root": str(folder / "photos"), "dim": dim, "labels": "folders", **IndexConfig().to_meta()}
    meta["model"] = describer.model.config()
    store = Store.create(folder / "idx", meta)
    from lookalike.store import with_labels

    store.commit(with_labels(make_table(rows, x, dim), "folders"), [])
    index = Index.open(store.path)
    xy_file = OUT / f"xy-umap-{n}.npy"
    xy = np.load(xy_file) if xy_file.is_file() and len(np.load(xy_file)) == n else None
    if xy is None:
        from lookalike.explore import layout_2d

        xy = layout_2d(index.vectors, "pca")
    CollectionMap(xy, "umap" if xy_file.is_file() else "pca", vectors_fingerprint(index.store)).save(
        index.store.file(MAP_FILE)
    )
    return index


def run_browser(args: argparse.Namespace) -> None:
    import socket
    import tempfile
    import threading

    import uvicorn
    from playwright.sync_api import sync_playwright

    from lookalike.server.app import create_app

    n = args.points
    with tempfile.TemporaryDirectory() as tmp:
        index = fake_index(n, Path(tmp))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        srv = uvicorn.Server(uvicorn.Config(create_app(index), host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=srv.run, daemon=True).start()
        while not srv.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        import urllib.request

        meta = json.loads(urllib.request.urlopen(url + "/api/map").read())
        loads, frames, draws = [], [], []
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu"])  # fmt: skip
            for rep in range(4):
                page = b.new_page(viewport={"width": 1280, "height": 860})
                t = time.perf_counter()
                page.goto(url + "/#map")
                page.wait_for_function(f"document.getElementById('map-canvas').dataset.drawn > {n // 2}", timeout=120_000)  # fmt: skip
                load_s = time.perf_counter() - t
                if rep:  # the first load also warms the server's map cache
                    loads.append(load_s)
                box = page.locator("#map-canvas").bounding_box()
                cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                page.evaluate(
                    "window._f = []; window._d = []; (function loop(t){ window._f.push(t); window._d.push(lookalikeMap.state.lastFrameMs); if (window._f.length < 400) requestAnimationFrame(loop); })(performance.now())"
                )
                page.mouse.move(cx, cy)
                page.mouse.down()
                for step in range(120):
                    page.mouse.move(cx + 200 * np.sin(step / 12), cy + 120 * np.cos(step / 15))
                page.mouse.up()
                f = np.diff(np.array(page.evaluate("window._f")))
                d = np.array(page.evaluate("window._d"))
                frames.extend(f.tolist())
                draws.append(float(np.median(d[d > 0])))
                page.close()
            b.close()
        srv.should_exit = True
    f = np.array(frames)
    save("browser", {
        "points": n, "payload_mb": round(meta["points"]["bytes"] / 2**20, 2), "load_s_median": round(float(np.median(loads)), 2),
        "load_s": [round(x, 2) for x in loads], "frame_ms_median": round(float(np.median(f)), 1),
        "frame_ms_p95": round(float(np.percentile(f, 95)), 1), "draw_ms_median": round(float(np.median(draws)), 1),
        "viewport": "1280x860", "layout": "umap" if (OUT / f"xy-umap-{n}.npy").is_file() else "pca",
    })  # fmt: skip
    print((OUT / "browser.json").read_text())


def run_quality(args: argparse.Namespace) -> None:
    from bench.common import shared_index
    from lookalike.explore import layout_2d, neighbour_label_agreement

    rows = []
    for name in args.sets or ("rooms", "flowers12"):
        index = shared_index(name)
        labels = index.labels
        full = neighbour_label_agreement(index.vectors, labels, K)
        row = {"set": name, "images": len(index), "classes": len(index.classes), "full": round(full, 3)}
        for method in ("umap", "tsne", "pca"):
            t = time.perf_counter()
            xy = layout_2d(index.vectors, method)
            row[f"{method}_s"] = round(time.perf_counter() - t, 1)
            row[method] = round(neighbour_label_agreement(xy, labels, K), 3)
        print(row, flush=True)
        rows.append(row)
        save("quality", {"rows": merged_rows("quality", rows, ("set",))})  # the next may not finish


def render() -> None:
    parts = {p.stem: json.loads(p.read_text()) for p in OUT.glob("*.json")}
    body = ["## Exploring a collection: search filters and the map (`explore`, issue 21)", ""]
    if "filters" in parts:
        rows = [r for r in parts["filters"]["rows"] if "share" in r]
        infos = [r for r in parts["filters"]["rows"] if "info" in r]
        body += [
            "### Filtered search (capture-time filters keeping 50%, 5% and 0.1% of the images)",
            "",
            "Clustered synthetic vectors (bench/scale.py's generator) with synthetic metadata (three years of capture "
            "times, GPS for 70%); 1280-d at 100k, 256-d at 1M (1M × 1280-d needs ~15 GB for the vectors, the flat "
            "index and the IVF copy on this shared machine). Single-query median latency, k = 10; the filter's "
            "allow-list (`select`) is computed once per filter and cached by `Index`, so it is shown apart. "
            "IVF is `lookalike --ann ivf` (tuned to recall@10 ≥ 0.95 unfiltered); its recall is against exact "
            "filtered search over the same allow-list. Every result held k matches, all inside the filter.",
            "",
            markdown_table(
                [
                    "vectors",
                    "kept",
                    "select ms",
                    "exact ms (unfiltered)",
                    "IVF ms (unfiltered)",
                    "IVF recall@10 vs exact filtered",
                    "k full / outside",
                ],
                [
                    [
                        f"{r['n']:,} × {r['dim']}",
                        f"{r['share']:.1%} ({r['kept']:,})",
                        r["select_ms"],
                        f"{r['exact_ms']} ({r['exact_base_ms']})",
                        f"{r['ivf_ms']} ({r['ivf_base_ms']})",
                        r["ivf_recall"],
                        f"{'yes' if r['exact_full_k'] and r['ivf_full_k'] else 'NO'} / {r['exact_outside'] + r['ivf_outside']}",
                    ]
                    for r in rows
                ],
            ),
            "",
        ]
        for r in infos:
            i = r["info"]
            sel = ", ".join(f"{k} {v} ms" for k, v in i["select_ms"].items())
            body.append(
                f"- {r['n']:,}: IVF nlist {i['nlist']}, nprobe {i['nprobe']}, built in {i['build_s']} s; converting the "
                f"metadata columns for filtering {i['convert_s']} s (once per opened index); other filters' select: {sel}."
            )
        body.append("")
    if "layout" in parts:
        body += [
            "### `lookalike map` layout (clustered 1280-d vectors, PCA to 50-d first; each run in a fresh process)",
            "",
            "Peak RSS is the process's maximum; ≤ where it was already reached while generating the synthetic vectors "
            "(float64 noise), so the layout itself stayed below it. CPU s is the process's user + system time.",
            "",
            markdown_table(
                [
                    "images",
                    "method",
                    "layout wall s",
                    "CPU s",
                    "numba warm-up wall s (first use per process)",
                    "peak RSS MB (vectors alone)",
                ],
                [
                    [
                        f"{r['n']:,}",
                        r["method"],
                        r["seconds"],
                        r.get("cpu_s", "–"),
                        r["warmup_s"] if r["method"] == "umap" else "–",
                        ("≤ " if r.get("before_mb", 0) >= r["peak_mb"] else "")
                        + f"{r['peak_mb']:,} ({r['vectors_mb']:,})",
                    ]
                    for r in parts["layout"]["rows"]
                ],
            ),
            "",
        ]
    if "browser" in parts:
        b = parts["browser"]
        body += [
            f"### Map tab with {b['points']:,} points (headless Debian Chromium, software rendering, {b['viewport']})",
            "",
            f"- Points payload (`/api/map/points`): {b['payload_mb']} MiB (float32 x, y + four uint16 colourings); "
            f"layout drawn: {b.get('layout', '?')}.",
            f"- Page load to the first drawn frame (`#map`): median {b['load_s_median']} s over {len(b['load_s'])} "
            f"warm loads ({', '.join(map(str, b['load_s']))} s).",
            f"- Panning (120 drag steps): frame interval median {b['frame_ms_median']} ms, p95 {b['frame_ms_p95']} ms; "
            f"one redraw of all points {b['draw_ms_median']} ms (median).",
            "",
        ]
    if "quality" in parts:
        body += [
            "### Is the map worth looking at? Share of each image's 10 nearest neighbours with its label",
            "",
            "In the full vectors (cosine) against the same in the 2-D layout (Euclidean); labels = folders.",
            "",
            markdown_table(
                [
                    "set",
                    "images",
                    "classes",
                    "full vectors",
                    "UMAP 2-D",
                    "t-SNE 2-D",
                    "PCA 2-D",
                    "layout s (UMAP / t-SNE / PCA)",
                ],
                [
                    [
                        r["set"],
                        f"{r['images']:,}",
                        r["classes"],
                        r["full"],
                        r["umap"],
                        r["tsne"],
                        r["pca"],
                        f"{r['umap_s']} / {r['tsne_s']} / {r['pca_s']}",
                    ]
                    for r in parts["quality"]["rows"]
                ],
            ),
            "",
        ]
    notes = OUT / "notes.json"  # conditions of the run that the figures alone do not show
    if notes.is_file():
        body += ["### Conditions", "", *[f"- {n}" for n in json.loads(notes.read_text())], ""]
    write_section("explore", "\n".join(body))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_layout":
        _layout_child(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("part", choices=["filters", "layout", "browser", "quality", "render"])
    ap.add_argument("--sizes", type=int, nargs="*")
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--sets", nargs="*", help="quality: which shared data sets (default rooms flowers12)")
    args = ap.parse_args()
    {"filters": run_filters, "layout": run_layout, "browser": run_browser, "quality": run_quality}.get(
        args.part, lambda a: None
    )(args)
    render()


if __name__ == "__main__":
    main()
