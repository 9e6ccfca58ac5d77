"""City-size collection: ``index → features → cluster --verify`` on 11,300 phone-size photos, measured, not projected.

bench.library measures 1,500 photos and projects larger collections from their per-photo rates. This benchmark
runs the same user's path on 11,300 photos (the damaged-buildings survey's size), to state what a projection
cannot: the time at that size (clustering and verification grow with the candidate pairs, not only the photos) and
each step's peak memory.

The collection is bench.library's 1,500 photos (hard links, the same files and truth) and 9,800 more made the same
way (4032×3024, sensor noise, every 250th as HEIC): the room photos bench.library left out, all product and flower
photos as single photos, and 2,373 further room photos as pairs (two views each: a building photographed twice).
The extra photos come from small images (≤ 416 px) blown up to 12 MP, so they hold less detail than the 1,500's
real photos; the report says how many there are.

Scored as bench.library scores it, on its 1,500 photos (ARI, the 42 groups exact) with the 9,800 photos present,
plus how many of the 9,800 land in a cluster of the 42 groups.

Run from the project folder: ``flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.library_city`` (about
35 minutes to make the photos once, 40 to run on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import dataset
from bench.library import DATA, HEIC_EVERY, collection, make_view, scores, step_table
from bench.library import pipeline as library_pipeline
from bench.library import plan as base_plan
from bench.report import markdown_table, write_section

SIZE = 11_300
PAIRS = 2_373  # room photos shown twice, so that the collection reaches SIZE


def plan(base: dict[str, str | None]) -> list[dict[str, Any]]:
    """The 9,800 photos beyond bench.library's: single photos and pairs, named after its IMG_ numbers."""
    rng = np.random.default_rng(11_300)
    rooms = sorted(p for d in sorted(dataset("rooms").iterdir()) if d.is_dir() for p in sorted(d.glob("*.jpg")))
    used = {it["source"] for it in base_plan(False)}  # bench.library's sources: not repeated
    free = [p for p in rooms if str(p) not in used]
    others = sorted(p for name in ("products", "flowers12") for p in dataset(name).rglob("*.jpg"))
    order = rng.permutation(len(free))
    paired = [free[k] for k in sorted(order[:PAIRS])]
    single = [free[k] for k in sorted(order[PAIRS:])] + others
    out = [{"source": str(p), "group": None, "view": 0} for p in single]
    for p in paired:
        out += [{"source": str(p), "group": f"pair-{p.parent.name}-{p.stem}", "view": v} for v in range(2)]
    out = out[: SIZE - len(base)]
    for n, k in enumerate(rng.permutation(len(out)), start=len(base)):
        ext = "heic" if n % HEIC_EVERY[False] == HEIC_EVERY[False] // 2 else "jpg"
        out[k]["name"] = f"IMG_{n:05d}.{ext}"
    return out


def city() -> tuple[Path, dict[str, str | None], dict[str, str | None]]:
    """The photo folder (made once), the truth of all 11,300 photos, and bench.library's truth (its 1,500)."""
    base_photos, base = collection(False)
    root = DATA / "city"
    photos, truth_file = root / "photos", root / "truth.json"
    if truth_file.is_file():
        return photos, json.loads(truth_file.read_text()), base
    photos.mkdir(parents=True, exist_ok=True)
    for name in base:
        if not (photos / name).exists():
            os.link(base_photos / name, photos / name)
    items = plan(base)
    started = time.perf_counter()
    with ProcessPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
        sizes = list(pool.map(make_view, items, [photos] * len(items), chunksize=8))
    mb = np.array(sizes) / 1e6
    print(f"made {len(items)} photos in {time.perf_counter() - started:.0f} s: {mb.sum():.0f} MB", file=sys.stderr)
    truth = {**base, **{it["name"]: it["group"] for it in items}}
    truth_file.write_text(json.dumps(truth, indent=1))
    return photos, truth, base


def pipeline(photos: Path, work: Path, log: Path) -> dict[str, Any]:
    """bench.library's steps, cold, each in its own process, and what the index folder weighs after them."""
    res = library_pipeline(photos, work, {}, log)
    res["index_mib"] = _size_mib(res.pop("index"))
    return res


def _size_mib(folder: Path) -> dict[str, float]:
    sizes = {"features": 0.0, "the rest": 0.0}
    for f in folder.rglob("*"):
        if f.is_file():
            sizes["features" if "features" in f.parts else "the rest"] += f.stat().st_size / 2**20
    return sizes


def restricted(clusters: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    """The clusters as seen from some photos only (the others taken out; a cluster left with one photo stays)."""
    out = [{**c, "paths": [p for p in c["paths"] if p in keep]} for c in clusters["clusters"]]
    return {**clusters, "clusters": [c for c in out if c["paths"]]}


def report(photos: Path, truth: dict[str, str | None], base: dict[str, str | None], res: dict[str, Any]) -> str:
    n = len(truth)
    small = n - len(base)
    lines = [
        *([res["note"], ""] if "note" in res else []),
        f"bench.library's 1,500 photos among {small:,} more, made the same way from the small photos of "
        f"../shared/data (rooms, products, flowers12; {PAIRS:,} of them as pairs of views), so {small / n:.0%} of "
        "the collection holds less detail than a phone photo. Measured, not projected: the 100,000 column still "
        "scales this run's per-photo rate.",
        "",
        *step_table(n, photos, res["steps"]),
    ]
    rows = []
    for name, c in (("global only", res["plain"]), ("--verify", res["verified"])):
        s = scores(restricted(c, set(base)), base)
        grouped = {c2["id"] for c2 in c["clusters"] if any(base.get(p) for p in c2["paths"])}
        inside = sum(1 for c2 in c["clusters"] if c2["id"] in grouped for p in c2["paths"] if p not in base)
        pred = {p: c2["id"] for c2 in c["clusters"] for p in c2["paths"]}
        pairs: dict[str, set[str]] = {}
        for p, g in truth.items():
            if g and g.startswith("pair-"):
                pairs.setdefault(g, set()).add(pred.get(p, p))
        together = sum(1 for ids in pairs.values() if len(ids) == 1)
        rows.append([name, f"{s['ari']:.3f}", f"{s['exact']} of {s['groups']}",
                     f"{s['distractors_inside'] + inside} of {n - len(base) + s['distractors']}",
                     f"{together} of {len(pairs)}", len(c["clusters"])])  # fmt: skip
    header = ["clusters", "ARI (the 1,500)", "groups exact", "others inside group clusters", "pairs together",
              "clusters"]  # fmt: skip
    lines += ["", *machines(res["steps"], n), ""]
    mib = res["index_mib"]
    lines += [markdown_table(header, rows), "",
              f"Index folder: {mib['the rest']:.0f} MiB, local features {mib['features']:,.0f} MiB.", "",
              "Building the re-ranking pack of this index again (512 keypoints a photo, as `features` does at its "
              "end), each in a fresh process:", "",
              markdown_table(["code", "time", "peak memory growth"], res["pack"])]  # fmt: skip
    return "\n".join(lines)


RAY_OVERHEAD = 1.25  # bench.library: features on a 2-worker local Ray took 1.25× the local time on the same cores


def machines(steps: dict[str, dict[str, float]], n: int, photos: int = 100_000) -> list[str]:
    """100,000 photos on N machines like this one, projected from this run (not measured): the per-photo steps
    (index, features, verification) split over the machines at Ray's measured overhead; the global clustering
    (the kNN graph, exact: quadratic in the photos) on the head alone."""
    head = steps["cluster (global only)"]["seconds"]
    spread = sum(steps[s]["seconds"] for s in ("index", "features", "cluster --verify")) - head
    per_photo = spread / n
    head_big = head * (photos / n) ** 2
    rows = []
    for m in (1, 4, 16, 64):
        wall = (per_photo * photos * (RAY_OVERHEAD if m > 1 else 1.0)) / m + head_big
        rows.append([m, f"{wall / 3600:.1f} h" if wall >= 5400 else f"{wall / 60:.0f} min"])
    return [
        f"**Projected, not measured**: {photos:,} photos on N machines like this one (2 cores each), from this run's "
        f"rates: {1000 * per_photo:.0f} ms per photo of work that Ray spreads (index, features, verification; "
        f"× {RAY_OVERHEAD} for Ray, as measured on one machine), plus the global clustering on the head, "
        f"{head:.1f} s here, scaled quadratically (exact kNN) to {head_big / 60:.0f} min. The photo and index "
        "folders must be on storage every machine reads (docs/verify.md).",
        "",
        markdown_table(["machines", f"{photos:,} photos, end to end"], rows),
    ]


PACK_PROBE = """
import resource, sys, time
from lookalike.index import Index
from lookalike.verify import FeatureCache
from lookalike.verify.local_features import FeaturePack
cache = FeatureCache(Index.open(sys.argv[1]).store)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
FeaturePack.build(cache, int(sys.argv[2]))
print(time.perf_counter() - started, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def pack_memory(index: Path, baseline: Path | None) -> list[list[str]]:
    """Building the re-ranking pack (512 keypoints a photo) of this index in a fresh process: time and how much
    the process's peak memory grew, with this checkout and with ``baseline`` (another checkout's source)."""
    import subprocess

    from bench.report import ROOT

    rows = []
    for name, src in (("this checkout", ROOT), *((("baseline", baseline),) if baseline else ())):
        # from a folder without a lookalike/ of its own: `python -c` puts the working folder first on the path
        out = subprocess.run([sys.executable, "-c", PACK_PROBE, str(index), "512"], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONPATH": str(src)}, cwd=index)  # fmt: skip
        seconds, before, after = (float(x) for x in out.stdout.split())
        rows.append([name, f"{seconds:.1f} s", f"{after - before:.0f} MiB"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--make-only", action="store_true", help="make the photos and stop")
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing BENCHMARKS.md")
    ap.add_argument("--baseline", type=Path, help="source checkout of an earlier commit: its pack building too")
    ap.add_argument("--pack-again", action="store_true", help="only the pack rows again; the rest from result.json")
    args = ap.parse_args()
    photos, truth, base = city()
    if args.make_only:
        return
    work = DATA / "city-run"
    if args.pack_again:
        res = json.loads((work / "result.json").read_text())
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime((work / "result.json").stat().st_mtime))
        res["pack"] = pack_memory(work / "index", args.baseline)
        res["note"] = (f"The pipeline's figures are those of the run stored at {stamp} (result.json); the pack rows "
                       "were measured again in this run.")  # fmt: skip
    else:
        work.mkdir(parents=True, exist_ok=True)
        log = work / "commands.log"
        log.write_text("")
        res = pipeline(photos, work, log)
        res["pack"] = pack_memory(work / "index", args.baseline)
        (work / "result.json").write_text(json.dumps(res, default=str))
    body = report(photos, truth, base, res)
    print(body)
    if not args.no_write:
        write_section("library_city", body, {"photos": len(truth), "data": str(photos)})


if __name__ == "__main__":
    main()
