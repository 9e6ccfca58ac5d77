"""Phone-size collection: ``index → features → cluster --verify`` on 12 MP photos, as a new user would run it.

Every other figure in BENCHMARKS.md was measured on 0.05–0.2 MP photos; people's photos are 12 MP JPEG or HEIC
files of 2–5 MB. This benchmark makes such a collection from the real photos of ../shared/data (places, interiors):
several views of each (crop, mild perspective, exposure), sensor-like noise so the files weigh what a phone's do,
written as 4032×3024 JPEGs (a few as HEIC), plus single room photos as distractors (no other view of them exists).
The truth is kept beside the photos (``truth.json``: each photo's group, or none for a distractor).

It runs the command line, step by step in fresh processes (as a user would: cold start included), reports each
step's time and peak memory, projects 11,300 and 100,000 photos from the per-photo rates (a projection, not a
measurement), and scores the clusters: ARI (distractors as singletons), places grouped exactly (one cluster holding
all of a group's photos and nothing else), distractors inside place clusters. Variants run on copies of the same
index in the same run, so their ratios are comparable even on a busy machine: the Ray engine (2 workers) against
local, and verification of undecided pairs only (``--skip-decided``).

The collection is generated once and cached under /work/bench-data/library/ (outside the repository).

Run from the project folder: ``flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.library`` (1,500 photos),
or ``--quick`` (60 photos, checks the pipeline end to end).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import dataset
from bench.report import markdown_table, write_section

DATA = Path(os.environ.get("LOOKALIKE_BENCH_DATA", "/work/bench-data/library"))
SIZE = (4032, 3024)
NOISE = 5.0  # sensor-like noise (sigma, 8-bit levels): what makes a phone JPEG weigh 2–5 MB
QUALITY = 92
HEIC_EVERY = {True: 60, False: 250}  # a few photos written as HEIC (encoding 12 MP HEIC takes minutes)
PROJECT = (11_300, 100_000)
# SIFT settings measured against the default (1,024 px, 2,048 keypoints, Pillow decoding)
SETTINGS = ((1024, 2048, "reduced"), (768, 2048, "pillow"), (1024, 1024, "pillow"))


# --- the collection --------------------------------------------------------------------------------------------


def _photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))


def plan(quick: bool) -> list[dict[str, Any]]:
    """What to make: (source file, group, view number) per photo; distractors have group None."""
    rng = np.random.default_rng(37)
    places = dataset("places")
    interiors = _photos(dataset("interiors"))
    rooms = sorted(p for d in sorted(dataset("rooms").iterdir()) if d.is_dir() for p in sorted(d.glob("*.jpg")))
    if quick:
        groups = [(f"interior-{p.stem}", [p], 5) for p in interiors[:6]]
        groups += [("berlin", _photos(places / "berlin"), 2)]
        groups += [("sceaux", _photos(places / "sceaux")[:6], 2)]
        distractors = 12
    else:
        groups = [(f"interior-{p.stem}", [p], 12) for p in interiors]
        groups += [(b, _photos(places / b), v) for b, v in (("berlin", 10), ("sceaux", 10), ("lund", 6))]
        distractors = 1500 - sum(len(files) * v for _, files, v in groups)
    out = []
    for group, files, views in groups:
        for f in files:
            out += [{"source": str(f), "group": group, "view": v} for v in range(views)]
    for k in sorted(rng.choice(len(rooms), distractors, replace=False)):
        out.append({"source": str(rooms[k]), "group": None, "view": 0})
    order = rng.permutation(len(out))  # names say nothing about groups
    for n, k in enumerate(order):
        ext = "heic" if n % HEIC_EVERY[quick] == HEIC_EVERY[quick] // 2 else "jpg"
        out[k]["name"] = f"IMG_{n:05d}.{ext}"
    return out


_TILE: list[np.ndarray] = []


def _noise_tile() -> np.ndarray:
    """1024×1024 of Gaussian sensor noise (int16), made once per process and shifted per photo."""
    if not _TILE:
        rng = np.random.default_rng(0)
        _TILE.append(np.rint(rng.standard_normal((1024, 1024, 3), dtype=np.float32) * NOISE).astype(np.int16))
    return _TILE[0]


def make_view(item: dict[str, Any], folder: Path) -> int:
    """One phone-size view of a source photo: a crop with mild perspective and exposure change, sensor noise;
    returns the file's size in bytes."""
    import cv2
    from PIL import Image

    target = folder / item["name"]
    if target.is_file():
        return target.stat().st_size
    seed = zlib.crc32(f"{Path(item['source']).name}/{item['view']}/{item['name']}".encode())
    rng = np.random.default_rng(seed)
    with Image.open(item["source"]) as src:
        img = np.asarray(src.convert("RGB"))
    h, w = img.shape[:2]
    size = SIZE if w >= h else SIZE[::-1]
    frac = rng.uniform(0.7, 0.92) if item["group"] else 1.0
    cw, ch = w * frac, h * frac
    x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    quad = np.float32([(x0, y0), (x0, y0 + ch), (x0 + cw, y0 + ch), (x0 + cw, y0)])
    if item["group"]:  # mild perspective: each corner moved up to 4 % of the crop
        quad += rng.uniform(-1, 1, (4, 2)).astype(np.float32) * 0.04 * min(cw, ch)
    quad = np.clip(quad, 0, [w - 1, h - 1]).astype(np.float32)
    out_w, out_h = size
    square = np.float32([(0, 0), (0, out_h), (out_w, out_h), (out_w, 0)])
    view = cv2.warpPerspective(img, cv2.getPerspectiveTransform(quad, square), size, flags=cv2.INTER_LINEAR)
    gain = rng.uniform(0.8, 1.2)  # exposure
    view = cv2.LUT(view, np.clip(np.arange(256) * gain, 0, 255).astype(np.uint8))
    noise = np.roll(_noise_tile(), tuple(rng.integers(0, 1024, 2)), axis=(0, 1))
    reps = (-(-out_h // 1024), -(-out_w // 1024), 1)
    view = np.clip(view.astype(np.int16) + np.tile(noise, reps)[:out_h, :out_w], 0, 255).astype(np.uint8)
    out = Image.fromarray(view)
    tmp = target.with_name(f".{target.name}.tmp")
    if item["name"].endswith(".heic"):
        import pillow_heif

        pillow_heif.register_heif_opener()
        out.save(tmp, format="HEIF", quality=85)
    else:
        out.save(tmp, format="JPEG", quality=QUALITY)
    os.replace(tmp, target)
    return target.stat().st_size


def collection(quick: bool) -> tuple[Path, dict[str, str | None]]:
    """The photo folder (made once, then reused) and each photo's group."""
    root = DATA / ("quick" if quick else "full")
    photos = root / "photos"
    truth_file = root / "truth.json"
    if truth_file.is_file():
        return photos, json.loads(truth_file.read_text())
    photos.mkdir(parents=True, exist_ok=True)
    items = plan(quick)
    started = time.perf_counter()
    with ProcessPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
        sizes = list(pool.map(make_view, items, [photos] * len(items), chunksize=4))
    truth = {it["name"]: it["group"] for it in items}
    mb = np.array(sizes) / 1e6
    print(
        f"made {len(items)} photos in {time.perf_counter() - started:.0f} s: {mb.sum():.0f} MB, "
        f"median {np.median(mb):.1f} MB (p10 {np.quantile(mb, 0.1):.1f}, p90 {np.quantile(mb, 0.9):.1f})",
        file=sys.stderr,
    )
    (root / "truth.json").write_text(json.dumps(truth, indent=1))
    return photos, truth


# --- running the steps -----------------------------------------------------------------------------------------


def run(args: list[str], log: Path) -> dict[str, float]:
    """One ``lookalike`` command in a fresh process: wall time and the process's peak memory (its own, from wait4)."""
    cmd = [sys.executable, "-m", "lookalike.cli", *args]
    started = time.perf_counter()
    with open(log, "ab") as fh:
        fh.write(("\n$ " + " ".join(args) + "\n").encode())
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=fh, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): lookalike {' '.join(args)}; see {log}")
    return {"seconds": seconds, "peak_mib": usage.ru_maxrss / 1024}


def scores(clusters: dict[str, Any], truth: dict[str, str | None]) -> dict[str, Any]:
    """ARI (distractors and noise as singletons), groups clustered exactly, distractors inside group clusters."""
    from sklearn.metrics import adjusted_rand_score

    names = sorted(truth)
    pred = {p: c["id"] for c in clusters["clusters"] for p in c["paths"]}
    y_pred = [pred.get(n, f"noise-{n}") for n in names]
    y_true = [truth[n] or f"single-{n}" for n in names]
    groups: dict[str, set[str]] = {}
    for n, g in truth.items():
        if g:
            groups.setdefault(g, set()).add(n)
    members = {c["id"]: set(c["paths"]) for c in clusters["clusters"]}
    exact = sum(1 for g in groups.values() if any(m == g for m in members.values()))
    grouped = {cid for cid, m in members.items() if any(truth.get(p) for p in m)}
    inside = sum(1 for n in names if truth[n] is None and pred.get(n) in grouped)
    return {
        "ari": float(adjusted_rand_score([str(y) for y in y_true], [str(y) for y in y_pred])),
        "exact": exact,
        "groups": len(groups),
        "distractors_inside": inside,
        "distractors": sum(1 for g in truth.values() if g is None),
    }


def cluster_step(index: Path, log: Path, extra: list[str]) -> tuple[dict[str, float], dict[str, Any]]:
    out = index / "clusters.json"
    step = run(["cluster", "--index", str(index), "--quiet", *extra], log)
    return step, json.loads(out.read_text())


def copy_index(index: Path, to: Path, features: bool) -> Path:
    shutil.rmtree(to, ignore_errors=True)
    shutil.copytree(index, to, ignore=None if features else shutil.ignore_patterns("features"))
    return to


def pipeline(photos: Path, work: Path, truth: dict[str, str | None], log: Path) -> dict[str, Any]:
    """The user's path, cold: index (int8) → features → cluster --verify; plus global-only clusters for reference."""
    index = work / "index"
    shutil.rmtree(index, ignore_errors=True)
    steps = {"index": run(["index", str(photos), "--index", str(index), "--labels", "none", "--quiet"], log)}
    steps["features"] = run(["features", "--index", str(index), "--quiet"], log)
    steps["cluster --verify"], verified = cluster_step(index, log, ["--verify"])
    steps["cluster (global only)"], plain = cluster_step(copy_index(index, work / "plain", False), log, [])
    return {"index": index, "steps": steps, "verified": verified, "plain": plain}


def variants(photos: Path, index: Path, work: Path, log: Path, ray: bool) -> dict[str, Any]:
    """The same index, other ways: verification of undecided pairs only (features only for the photos that need
    them), and features + verification on a 2-worker local Ray; each checked against the local run's results."""
    out: dict[str, Any] = {}
    once = work / "once"  # read and decode once: index --features, cold, from nothing
    shutil.rmtree(once, ignore_errors=True)
    made = run(["index", str(photos), "--index", str(once), "--labels", "none", "--quiet", "--features"], log)
    step, clusters = cluster_step(once, log, ["--verify"])
    out["once"] = {"index": made, "cluster": step, "clusters": clusters}
    skip = copy_index(index, work / "skip", False)
    out["skip"] = cluster_step(skip, log, ["--verify", "--skip-decided"])
    out["decided"] = decided_check(index)
    out["bad"] = bad_inputs(
        index.parent.parent / ("quick" if "quick" in index.parent.name else "full") / "photos", work / "bad"
    )
    for res, kp, dec in SETTINGS:  # SIFT's size and keypoints against the defaults, same photos, same run
        other = copy_index(index, work / f"sift-{res}-{kp}-{dec}", False)
        flags = ["--resolution", str(res), "--max-keypoints", str(kp), "--decode", dec]
        feats = run(["features", "--index", str(other), "--quiet", *flags], log)
        step, clusters = cluster_step(other, log, ["--verify"])
        key = f"sift {res} px, {kp} keypoints, {dec} decoding"
        out[key] = {"features": feats, "cluster": step, "clusters": clusters}
    if ray:
        on_ray = copy_index(index, work / "ray", False)
        feats = run(["features", "--index", str(on_ray), "--quiet", "--engine", "ray", "--num-workers", "2"], log)
        same = sorted(p.name for p in (index / "features").glob("*.npz"))
        equal = all((index / "features" / n).read_bytes() == (on_ray / "features" / n).read_bytes() for n in same)
        equal = equal and same == sorted(p.name for p in (on_ray / "features").glob("*.npz"))
        step, clusters = cluster_step(on_ray, log, ["--verify", "--engine", "ray", "--num-workers", "2"])
        out["ray"] = {"features": feats, "cluster": step, "clusters": clusters, "features_equal": equal}
    return out


def upright_extract(image: Any, conf: Any = None) -> Any:
    """Upright RootSIFT, for measuring only: OpenCV has no upright flag, so keypoints are detected (with their
    orientations), one kept per location and scale (the strongest; a quarter more asked for, so 2,048 remain), and
    described again at angle 0. The pyramid is built twice: this costs more than the default, never less."""
    import cv2

    from lookalike.verify.local_features import FeatureConf, Features, grey_array

    conf = conf or FeatureConf()
    pixels = image if isinstance(image, np.ndarray) else grey_array(image, conf.resolution)[0]
    pixels = np.ascontiguousarray(pixels, np.uint8)
    sift = cv2.SIFT_create(nfeatures=conf.max_keypoints * 5 // 4)
    best: dict[tuple[float, float, float], Any] = {}
    for k in sift.detect(pixels, None):
        key = (round(k.pt[0], 2), round(k.pt[1], 2), round(k.size, 2))
        if key not in best or k.response > best[key].response:
            best[key] = k
    kept = sorted(best.values(), key=lambda k: -k.response)[: conf.max_keypoints]
    for k in kept:
        k.angle = 0.0
    h, w = pixels.shape[:2]
    kept, desc = sift.compute(pixels, kept) if kept else ((), None)
    if desc is None or not kept:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), (w, h))
    xy = np.array([k.pt for k in kept], np.float32)
    return Features(xy, np.clip(np.rint(desc), 0, 255).astype(np.uint8), (w, h))


def upright_report(res: dict[str, Any], index: Path, truth: dict[str, str | None]) -> str:
    from bench.places import PLACES

    base = json.loads((index / "clusters.json").read_text())
    d, u = res["per_photo"]["default"], res["per_photo"]["upright"]
    rows = []
    for name, c in (("default (oriented)", base), ("upright", res["clusters"])):
        sc = scores(c, truth)
        rows.append([name, f"{sc['ari']:.3f}", f"{sc['exact']} of {sc['groups']}",
                     f"{sc['distractors_inside']} of {sc['distractors']}", verification_note(c)])  # fmt: skip
    n = len(truth)
    return "\n".join([
        f"Upright RootSIFT (every keypoint described at angle 0; 2,048 per photo at 1,024 px) against the default "
        f"(oriented) on bench.library's {n:,} photos. Time per photo, decode + SIFT on one core, median of "
        f"{res['sample']} photos interleaved: default {1000 * d:.0f} ms, upright {1000 * u:.0f} ms (**{u / d:.2f}×**; "
        "OpenCV has no upright mode, so the pyramid is built twice). The whole collection upright: features "
        f"{res['features']:.0f} s (2 threads, in the benchmark's process), `cluster --verify` "
        f"{res['cluster']['seconds']:.1f} s. The default's clusters are those of the last full run, on the same index.",
        "",
        markdown_table(["SIFT", "ARI", "groups exact", "distractors inside", "verification"], rows),
        "",
        "The places of ../shared/data/places among 559 distractors (bench.places' mix, 602 images), features made "
        "in the benchmark's process on 2 threads:",
        "",
        markdown_table(["SIFT", "ARI", "ARI (places only)", *PLACES, "distractors inside", "features"],
                       res["places"]),
    ])  # fmt: skip


@contextlib.contextmanager
def sift_as(fn: Any) -> Iterator[None]:
    """Local features made by ``fn`` instead of the default extraction, in this process, until the block ends."""
    import lookalike.verify.local_features as lf

    saved, lf.extract = lf.extract, fn
    try:
        yield
    finally:
        lf.extract = saved


def upright_check(index: Path, work: Path, log: Path, sample: int = 150) -> dict[str, Any]:
    """Upright SIFT against the default on the same photos: per-photo time side by side (interleaved, one core, on
    ``sample`` photos), then the whole collection's features made upright (in this process, 2 threads) and
    ``cluster --verify`` run on them."""
    import cv2

    import lookalike.verify.local_features as lf
    from lookalike.index import Index

    cv2.setNumThreads(1)
    idx = Index.open(index)
    times: dict[str, list[float]] = {"default": [], "upright": []}
    chosen = list(zip(idx.paths, idx.names, strict=True))[:sample]
    for path, name in chosen:
        for key, fn in (("default", lf.extract), ("upright", upright_extract)):
            with sift_as(fn):
                started = time.perf_counter()
                lf.features_of_file(Path(path), name, lf.FeatureConf())
                times[key].append(time.perf_counter() - started)
    other = copy_index(index, work / "upright", False)
    with sift_as(upright_extract):
        started = time.perf_counter()
        Index.open(other).local_features(workers=2)
        made = time.perf_counter() - started
    step, clusters = cluster_step(other, log, ["--verify"])
    return {"per_photo": {k: float(np.median(v)) for k, v in times.items()}, "sample": len(chosen),
            "features": made, "cluster": step, "clusters": clusters, "places": upright_places(work)}  # fmt: skip


def upright_places(work: Path) -> list[list[str]]:
    """The places mix (as places_check) with the default SIFT and upright, both made in this process."""
    import lookalike.verify.local_features as lf
    from bench.places import PLACES, cluster_scores, make_mix, place_of
    from lookalike.cluster import cluster_index
    from lookalike.index import Index
    from lookalike.verify import MatchConf

    base = Index.build(make_mix(), work / "places-index", labels="folders", progress=False)
    place, rows = place_of(base.labels), []
    for name, fn in (("default (oriented)", lf.extract), ("upright", upright_extract)):
        index = Index.open(copy_index(base.folder, work / f"places-{name.split()[0]}", False))
        with sift_as(fn):
            started = time.perf_counter()
            index.local_features(workers=2)
            feat_s = time.perf_counter() - started
        result = cluster_index(index, match=MatchConf(), save=False)
        sc = cluster_scores(result.labels, place)
        rows.append([name, f"{sc['ari']:.3f}", f"{sc['ari_places']:.3f}", *(str(sc[p]) for p in PLACES),
                     str(sc["distractors in place clusters"]), f"{feat_s:.1f} s"])  # fmt: skip
    return rows


def decided_check(index: Path) -> dict[str, Any]:
    """Every kNN pair verified (features cached) against what ``--skip-decided`` takes from the cosine: how many
    matches lie below the far threshold at several margins, and how many near-copies verification refutes."""
    from lookalike.cluster.graph import suggest_thresholds
    from lookalike.cluster.run import COPY, FAR_BELOW, Decided, _verdicts
    from lookalike.index import Index
    from lookalike.search import knn_graph
    from lookalike.verify import MatchConf

    idx = Index.open(index)
    ids, sims = knn_graph(idx.vectors, 10)
    s = suggest_thresholds(sims, idx.vectors)
    verdict, _ = _verdicts(idx, ids, sims, MatchConf(), None, None, False, [])
    rows = np.repeat(np.arange(len(ids)), ids.shape[1])
    ok = ids.ravel() >= 0
    pairs, first = np.unique(np.sort(np.stack([rows[ok], ids.ravel()[ok]], axis=1), axis=1), axis=0, return_index=True)
    cos, code = sims.ravel()[ok][first], verdict.ravel()[ok][first]
    t = (cos - s.weak) / max(s.strong - s.weak, 1e-6)  # 0 at weak, 1 at strong
    out: dict[str, Any] = {"pairs": len(pairs), "matches": int((code > 0).sum()), "strong": s.strong, "weak": s.weak}
    out["far"] = {
        m: {"decided": int((t < -m).sum()), "matches_lost": int(((t < -m) & (code > 0)).sum())} for m in (1, 2, 3)
    }
    copy = Decided.of(s.strong, s.weak).copy
    out["copy"] = {"decided": int((cos >= copy).sum()), "refuted": int(((cos >= copy) & (code < 0)).sum())}
    out["lowest_match_t"] = float(t[code > 0].min()) if (code > 0).any() else None
    out["default"] = {"far_below": FAR_BELOW, "copy": COPY}
    return out


def bad_inputs(photos: Path, folder: Path) -> list[list[str]]:
    """The awkward files of a real library, made from one of the photos: what the model and local features make
    of each, and at what cost (one file at a time: decode + model on the model's 2 threads; decode + SIFT on one
    core), beside a plain photo of the collection."""
    import cv2
    from PIL import Image

    from lookalike.config import IndexConfig
    from lookalike.embed import Describer
    from lookalike.images.pillow import can_read
    from lookalike.samples import heic_with_depth
    from lookalike.verify import FeatureConf
    from lookalike.verify.local_features import features_of_file

    folder.mkdir(parents=True, exist_ok=True)
    can_read("heif")  # registers pillow-heif's saver
    source = next(p for p in sorted(photos.iterdir()) if p.suffix == ".jpg")
    with Image.open(source) as im:
        img = im.convert("RGB")
    depth = Image.fromarray(np.tile(np.linspace(0, 255, 1008, dtype=np.uint8), (756, 1)))  # a quarter-size map
    cases = {
        "12 MP JPEG (the collection's)": ("plain.jpg", lambda p: shutil.copy(source, p)),
        "12 MP progressive JPEG": ("progressive.jpg", lambda p: img.save(p, quality=QUALITY, progressive=True)),
        "50 MP panorama (14,000×3,600)": (
            "panorama.jpg",
            lambda p: Image.fromarray(np.tile(np.asarray(img.resize((7000, 3600))), (1, 2, 1))).save(p, quality=90),
        ),
        "CMYK JPEG": ("cmyk.jpg", lambda p: img.convert("CMYK").save(p, quality=QUALITY)),
        "truncated JPEG (first 40 %)": ("truncated.jpg", lambda p: p.write_bytes(source.read_bytes()[: source.stat().st_size * 2 // 5])),
        "12 MP HEIC": ("plain.heic", lambda p: img.save(p, "HEIF", quality=85)),
        "12 MP HEIC with a depth map (portrait mode)": ("depth.heic", lambda p: p.write_bytes(heic_with_depth(img, depth, 85))),
    }  # fmt: skip
    rows = []
    cv2.setNumThreads(1)
    describer = Describer.from_config(IndexConfig(), runtime="onnx")
    list(describer.describe_files([source], batch_size=1, workers=1))  # warm-up: the model's first run is slower
    for what, (name, make) in cases.items():
        path = folder / name
        if not path.is_file():
            make(path)
        started = time.perf_counter()
        (batch,) = describer.describe_files([path], batch_size=1, workers=1)
        vec_ms = 1000 * (time.perf_counter() - started)
        item = batch.items[0]
        vector = f"described ({item.meta.width}×{item.meta.height})" if item.error is None else f"skipped: {item.error}"
        started = time.perf_counter()
        feats, error = features_of_file(path, name, FeatureConf())
        ms = 1000 * (time.perf_counter() - started)
        got = f"{len(feats)} keypoints at {feats.size[0]}×{feats.size[1]}" if feats is not None else f"skipped: {error}"
        rows.append([what, f"{path.stat().st_size / 1e6:.1f} MB", vector, f"{vec_ms:.0f} ms", got, f"{ms:.0f} ms"])
    return rows


AWKWARD_HEADER = ["file", "size", "vector", "decode + model", "local features", "decode + SIFT"]


def awkward_report(rows: list[list[str]]) -> str:
    return "\n".join([
        "The awkward files of a phone library, each made from one photo of the collection, one at a time: the vector "
        "(decode + EfficientNet-Lite0 at the default settings, the model's threads) and the local features (decode + "
        "RootSIFT at 1,024 px, one core), beside the plain photo they were made from.",
        "",
        markdown_table(AWKWARD_HEADER, rows),
    ])  # fmt: skip


def places_check(work: Path) -> list[list[str]]:
    """The three places of ../shared/data/places among 559 distractors (bench.places' mix): cluster --verify with
    each SIFT setting and with --skip-decided, scored as bench.places scores them; features timed per setting."""
    from bench.places import PLACES, cluster_scores, make_mix, place_of
    from lookalike.cluster import cluster_index
    from lookalike.index import Index
    from lookalike.verify import FeatureConf, MatchConf

    base = Index.build(make_mix(), work / "places-index", labels="folders", progress=False)
    place = place_of(base.labels)
    rows = []
    default = (1024, 2048, "pillow")
    for (res, kp, dec), skip in [(default, False), (default, True), *((s, False) for s in SETTINGS)]:
        index = Index.open(copy_index(base.folder, work / f"places-{res}-{kp}-{dec}-{skip}", False))
        started = time.perf_counter()
        if not skip:  # --skip-decided extracts what it needs inside cluster_index, timed there
            index.local_features(resolution=res, max_keypoints=kp, decode=dec, workers=2)
        feat_s = time.perf_counter() - started
        started = time.perf_counter()
        conf = FeatureConf(kp, res, dec)
        result = cluster_index(index, match=MatchConf(), features=conf, skip_decided=skip, save=False)
        s = cluster_scores(result.labels, place)
        rows.append([
            f"{res} px, {kp} keypoints, {dec}" + (", --skip-decided" if skip else ""), f"{s['ari']:.3f}",
            f"{s['ari_places']:.3f}", *(str(s[p]) for p in PLACES), str(s["distractors in place clusters"]),
            f"{feat_s:.1f} s", f"{time.perf_counter() - started:.1f} s",
        ])  # fmt: skip
    return rows


def verification_note(clusters: dict[str, Any]) -> str:
    return next((n for n in clusters.get("notes", []) if n.startswith("geometric verification")), "")


def per_photo(seconds: float, n: int) -> str:
    return f"{1000 * seconds / n:.0f} ms"


def projected(seconds: float, n: int, photos: int) -> str:
    minutes = seconds / n * photos / 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def step_table(n: int, photos: Path, steps: dict[str, dict[str, float]]) -> list[str]:
    total = sum(steps[s]["seconds"] for s in ("index", "features", "cluster --verify"))
    rows = [
        [name, f"{s['seconds']:.1f} s", per_photo(s["seconds"], n), *(projected(s["seconds"], n, p) for p in PROJECT),
         f"{s['peak_mib']:.0f} MiB"]
        for name, s in steps.items()
    ]  # fmt: skip
    rows.append(["**verified clusters, end to end**", f"{total:.1f} s", per_photo(total, n),
                 *(projected(total, n, p) for p in PROJECT), ""])  # fmt: skip
    mb = np.array([f.stat().st_size for f in photos.iterdir()]) / 1e6
    heic = sum(1 for f in photos.iterdir() if f.suffix == ".heic")
    return [
        f"{n} phone-size photos ({SIZE[0]}×{SIZE[1]}, median {np.median(mb):.1f} MB, {heic} HEIC) made from "
        "../shared/data places and interiors (views: crop, mild perspective, exposure, sensor noise) among single "
        "room photos as distractors. Each step is one `lookalike` command in a fresh process (cold start included; "
        "peak RSS is that process's). Projections scale the per-photo rate linearly: they are not measurements.",
        "",
        markdown_table(
            ["step", f"time for {n}", "per photo", "projected 11,300", "projected 100,000", "peak RSS"], rows
        ),
        "",
    ]


def cluster_table(base: dict[str, Any], var: dict[str, Any], truth: dict[str, str | None]) -> list[str]:
    runs = [("global only", base["plain"]), ("--verify", base["verified"])]
    if "once" in var:
        runs.append(("`index --features`, then --verify", var["once"]["clusters"]))
    if "skip" in var:
        runs.append(("--verify --skip-decided", var["skip"][1]))
    if "ray" in var:
        runs.append(("--verify on Ray (2 workers)", var["ray"]["clusters"]))
    runs += [(f"--verify, SIFT at {k[5:]}", var[k]["clusters"]) for k in var if k.startswith("sift ")]
    table = []
    for name, c in runs:
        s = scores(c, truth)
        table.append([name, f"{s['ari']:.3f}", f"{s['exact']} of {s['groups']}",
                      f"{s['distractors_inside']} of {s['distractors']}", verification_note(c)])  # fmt: skip
    header = ["clusters", "ARI", "groups exact", "distractors inside group clusters", "verification"]
    return [markdown_table(header, table), ""]


def variant_notes(n: int, steps: dict[str, dict[str, float]], base: dict[str, Any], var: dict[str, Any]) -> list[str]:
    lines = []
    full = steps["features"]["seconds"] + steps["cluster --verify"]["seconds"]
    if "once" in var:
        o = var["once"]
        two = steps["index"]["seconds"] + steps["features"]["seconds"]
        one, c = o["index"]["seconds"], o["cluster"]["seconds"]
        lines.append(
            f"- **Read and decode once**: `index --features` {one:.1f} s ({per_photo(one, n)} per photo, peak "
            f"{o['index']['peak_mib']:.0f} MiB) against `index` + `features` {two:.1f} s ({one / two:.2f}×); "
            f"`cluster --verify` on it {c:.1f} s; end to end {one + c:.1f} s against "
            f"{two + steps['cluster --verify']['seconds']:.1f} s "
            f"({(one + c) / (two + steps['cluster --verify']['seconds']):.2f}×)."
        )
    if "skip" in var:
        t = var["skip"][0]["seconds"]
        notes = "; ".join(x for x in var["skip"][1].get("notes", []) if x.startswith("decided by cosine"))
        lines.append(
            f"- `cluster --verify --skip-decided` from no features: {t:.1f} s ({per_photo(t, n)} per photo) against "
            f"{full:.1f} s for `features` + `cluster --verify` ({t / full:.2f}×); {notes}."
        )
    if "decided" in var:
        d = var["decided"]
        far = "; ".join(
            f"weak − {m}·(strong − weak): {v['decided']} decided, {v['matches_lost']} of them verified matches"
            for m, v in d["far"].items()
        )
        lowest = d["lowest_match_t"]
        lines.append(
            f"- Pairs the cosine decides, against verifying all {d['pairs']} kNN pairs ({d['matches']} matches; "
            f"strong {d['strong']:.4f}, weak {d['weak']:.4f}). Far below {far}. Near-copies (≥ "
            f"max({d['default']['copy']}, strong)): {d['copy']['decided']} decided, {d['copy']['refuted']} of them "
            f"refuted by verification. Lowest verified match at (cos − weak)/(strong − weak) = "
            f"{'–' if lowest is None else round(lowest, 2)}."
        )
    for k in (k for k in var if k.startswith("sift ")):
        f, c = var[k]["features"]["seconds"], var[k]["cluster"]["seconds"]
        lines.append(
            f"- SIFT at {k[5:]}: features {f:.1f} s ({f / steps['features']['seconds']:.2f}× the default's "
            f"{steps['features']['seconds']:.1f} s), cluster --verify {c:.1f} s "
            f"({c / steps['cluster --verify']['seconds']:.2f}×)."
        )
    if "ray" in var:
        r = var["ray"]
        same = r["clusters"]["clusters"] == base["verified"]["clusters"]
        lines.append(
            f"- Ray, 2 local workers: features {r['features']['seconds']:.1f} s (local "
            f"{steps['features']['seconds']:.1f} s), cluster --verify {r['cluster']['seconds']:.1f} s (local "
            f"{steps['cluster --verify']['seconds']:.1f} s); feature files byte-equal to the local run: "
            f"{'yes' if r['features_equal'] else '**no**'}; clusters equal: {'yes' if same else '**no**'}."
        )
    return lines


def report(n: int, photos: Path, base: dict[str, Any], var: dict[str, Any], truth: dict[str, str | None]) -> str:
    steps = base["steps"]
    lines = step_table(n, photos, steps) + cluster_table(base, var, truth) + variant_notes(n, steps, base, var)
    if "places" in var:
        from bench.places import PLACES

        header = ["places among 559 distractors", "ARI", "ARI (places only)", *PLACES, "distractors inside",
                  "features", "cluster --verify"]  # fmt: skip
        lines += ["", "The same choices on ../shared/data/places among distractors (bench.places' mix, 602 images, "
                  "in the benchmark's process; --skip-decided includes its features):", ""]  # fmt: skip
        lines += [markdown_table(header, var["places"]), ""]
    if "bad" in var:
        lines += ["", "Awkward files (local features, default settings, one core, in the benchmark's process):", ""]
        lines += [markdown_table(AWKWARD_HEADER, var["bad"]), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="60 photos: checks the pipeline end to end")
    ap.add_argument("--no-ray", action="store_true", help="leave out the Ray variant")
    ap.add_argument("--places", action="store_true", help="with --quick: also the places mix (full runs always)")
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing BENCHMARKS.md")
    ap.add_argument("--awkward", action="store_true", help="only the awkward files, in a section of their own")
    ap.add_argument("--upright", action="store_true", help="only upright SIFT, on the last run's index")
    args = ap.parse_args()
    photos, truth = collection(args.quick)
    if args.upright:
        work = DATA / ("quick-run" if args.quick else "full-run")
        body = upright_report(upright_check(work / "index", work, work / "commands.log"), work / "index", truth)
        print(body)
        if not args.no_write:
            write_section("library_upright", body, {"data": str(photos), "index": str(work / "index")})
        return
    if args.awkward:
        body = awkward_report(bad_inputs(photos, DATA / ("quick-run" if args.quick else "full-run") / "bad"))
        print(body)
        if not args.no_write:
            write_section("library_awkward", body, {"data": str(photos)})
        return
    work = DATA / ("quick-run" if args.quick else "full-run")
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    log.write_text("")
    base = pipeline(photos, work, truth, log)
    var = variants(photos, base["index"], work, log, not args.no_ray)
    if args.places or not args.quick:
        var["places"] = places_check(work)
    body = report(len(truth), photos, base, var, truth)
    print(body)
    if not args.no_write:
        write_section("library", body, {"photos": len(truth), "data": str(photos), "quick": args.quick})


if __name__ == "__main__":
    main()
