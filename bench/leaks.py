"""Leak check and uniqueness. Writes the ``leaks`` ("Leak check") and ``uniqueness`` ("Uniqueness") sections of
BENCHMARKS.md.

1. Leak check: the rooms photos split 80/20 (stratified, seed 0, as bench.train splits them); the training
   four fifths are indexed; the test fifth gets planted copies of 5 % of the training photos (resized, recompressed,
   cropped or mirrored, in turn) under the class folder of their source. ``evaluate`` with the leak check must
   report each planted copy with its source as twin (recall), and what it reports must be planted copies or real
   copies already in the rooms set (precision, both ways). The leaks found among the unplanted test photos are the
   rooms set's own train/test copies (listed in bench/results/leaks.json). Accuracy on all test photos and on the
   leak-free ones side by side; the check's cost against ``evaluate --no-leak-check`` in the same run.
2. Uniqueness: ``uniqueness(index)`` on the rooms index (the top 20 most redundant as a sheet in docs/) and the time
   on 10,000 vectors.

    flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.leaks [--prepare]
"""

from __future__ import annotations

import os

os.environ.setdefault("LOOKALIKE_CACHE", "/tmp/lookalike-cache")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from PIL import Image, ImageOps  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import CACHE, dataset  # noqa: E402
from bench.report import ROOT, markdown_table, write_section  # noqa: E402

WORK = CACHE / "leaks"
RESULTS = Path(__file__).parent / "results" / "leaks.json"
KINDS = ("resized", "recompressed", "cropped", "mirrored")
PLANT_SHARE = 0.05


def plant(img: Image.Image, kind: str, rng: random.Random) -> tuple[Image.Image, int]:
    """One altered copy and the JPEG quality to save it at."""
    w, h = img.size
    if kind == "resized":
        f = rng.uniform(0.5, 0.9)
        return img.resize((max(16, int(w * f)), max(16, int(h * f))), Image.Resampling.LANCZOS), 90
    if kind == "recompressed":
        return img, rng.randint(30, 60)
    if kind == "cropped":
        f = rng.uniform(0.75, 0.9)
        cw, ch = int(w * f), int(h * f)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return img.crop((x, y, x + cw, y + ch)), 90
    if kind == "mirrored":
        return ImageOps.mirror(img), 85
    raise ValueError(kind)


def prepare(seed: int = 0):  # noqa: ANN201
    """The split folders (symlinks), the planted copies and the training index; returns (index, test dir, truth)."""
    from bench.train import _files, split
    from lookalike.index import Index

    files = _files("rooms")
    tr, te = split(files)
    root = dataset("rooms")
    train_dir, test_dir = WORK / "train", WORK / "test"
    truth_file = WORK / "truth.json"
    if not truth_file.is_file():
        shutil.rmtree(WORK, ignore_errors=True)
        for folder, part in ((train_dir, tr), (test_dir, te)):
            for p, c in part:
                (folder / c).mkdir(parents=True, exist_ok=True)
                (folder / c / p.name).symlink_to(p)
        rng = random.Random(seed)
        chosen = rng.sample(range(len(tr)), round(PLANT_SHARE * len(tr)))
        truth = {}
        for n, i in enumerate(sorted(chosen)):
            p, c = tr[i]
            kind = KINDS[n % len(KINDS)]
            copy, q = plant(Image.open(p).convert("RGB"), kind, rng)
            name = f"planted_{n:04d}_{kind}.jpg"
            copy.save(test_dir / c / name, quality=q)
            truth[f"{c}/{name}"] = {"source": p.relative_to(root).as_posix(), "kind": kind}
        truth_file.write_text(json.dumps(truth, indent=1))
    truth = json.loads(truth_file.read_text())
    index = Index.build(train_dir, WORK / "index", labels="folders", precision="fp32", progress=False)
    return index, test_dir, truth


def leak_bench(index, test_dir: Path, truth: dict) -> dict:  # noqa: ANN001
    import numpy as np

    from lookalike.evaluate import run_evaluation

    times = {"plain": [], "check": []}
    evs = {}
    for what in ("plain", "check", "plain"):
        t0 = time.perf_counter()
        evs[what] = run_evaluation(index, test_dir, leak_check=what == "check")
        times[what].append(time.perf_counter() - t0)
        print(what, f"{times[what][-1]:.1f}s", flush=True)
    ev = evs["check"]
    rep = ev.leaks
    reported = {x["path"]: x for x in rep.leaks}
    planted = set(truth)
    found = {p for p in planted if p in reported and truth[p]["source"] in {t["name"] for t in reported[p]["twins"]}}
    wrong_twin = {p for p in planted if p in reported and p not in found}
    natural = {p: reported[p] for p in reported if p not in planted}
    by_kind = {k: {"planted": 0, "found": 0} for k in KINDS}
    for p, t in truth.items():
        by_kind[t["kind"]]["planted"] += 1
        by_kind[t["kind"]]["found"] += p in found
    missed = sorted(planted - found)
    # accuracy on: all test photos (with planted), leak-free ones, the original fifth (no planted copies)
    m = ev.metrics
    rel = [p.relative_to(test_dir).as_posix() for p in ev.paths]
    orig = np.array([r not in planted for r in rel])
    acc_orig = float(np.mean([a == b for a, b, o in zip(ev.y_true, ev.y_pred, orig, strict=True) if o]))
    acc_planted = float(np.mean([a == b for a, b, o in zip(ev.y_true, ev.y_pred, orig, strict=True) if not o]))
    # how close the other test photos come to the index: why NEAR_COPY is where it is
    scores, _ = index.searcher.search(ev.vectors, 1)
    clean = np.array([r not in reported for r in rel])
    best = scores[clean, 0]
    return {
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "indexed": len(index),
        "test": len(ev.paths),
        "planted": len(planted),
        "reported": len(reported),
        "found": len(found),
        "wrong_twin": sorted(wrong_twin),
        "missed": [{"path": p, **truth[p]} for p in missed],
        "recall": len(found) / max(1, len(planted)),
        "precision_strict": len(found) / max(1, len(reported)),
        "precision_planted_only": len(found) / max(1, len(reported) - len(natural)),
        "by_kind": by_kind,
        "reported_by_kind": rep.counts(),
        "natural": [{"path": p, "twins": x["twins"][:3]} for p, x in sorted(natural.items())],
        "natural_count": len(natural),
        "original_test": int(orig.sum()),
        "within_test": len(rep.within_test),
        "within_test_pairs": rep.within_test[:200],
        "accuracy_all": m["accuracy"],
        "accuracy_leak_free": m["leak_free"].get("accuracy"),
        "n_leak_free": m["leak_free"]["n"],
        "accuracy_original_fifth": acc_orig,
        "accuracy_planted": acc_planted,
        "r1_all": m["recall_at"]["1"],
        "r1_leak_free": m["leak_free"].get("recall_at", {}).get("1"),
        "map_all": m["map_at_r"],
        "map_leak_free": m["leak_free"].get("map_at_r"),
        "method": m["method"],
        "seconds_plain": min(times["plain"]),
        "seconds_plain_runs": times["plain"],
        "seconds_check": times["check"][0],
        "check_seconds": rep.seconds,
        "checked_pairs": rep.settings.get("checked_pairs"),
        "best_cosine_others": {f"{q:g}": round(float(np.quantile(best, q)), 4) for q in (0.5, 0.9, 0.99, 1.0)},
        "others_at_or_above_near": int((best >= 0.95).sum()),
        "others": int(clean.sum()),
    }


def uniqueness_bench() -> dict:
    import numpy as np

    from bench.common import shared_index
    from lookalike.uniqueness import uniqueness, uniqueness_scores, uniqueness_sheets

    rooms = shared_index("rooms")
    t0 = time.perf_counter()
    u = uniqueness(rooms, force=True)
    rooms_seconds = time.perf_counter() - t0
    sheets = uniqueness_sheets(u, ROOT / "docs" / "images", top=20)
    for p in sheets:
        p.rename(p.with_name("uniqueness-rooms-" + p.name))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10_000, rooms.vectors.shape[1])).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t0 = time.perf_counter()
    uniqueness_scores(x)
    ten_k = time.perf_counter() - t0
    top = u.to_dict(20)
    return {
        "rooms": len(rooms),
        "rooms_seconds": rooms_seconds,
        "ten_k_seconds": ten_k,
        "dim": int(rooms.vectors.shape[1]),
        "quantiles": top["quantiles"],
        "most_redundant": top["most_redundant"],
        "most_isolated": top["most_isolated"][:10],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepare", action="store_true", help="only make the folders and the index")
    args = ap.parse_args()
    index, test_dir, truth = prepare()
    print(f"index: {len(index)} images; test: {test_dir}; planted: {len(truth)}", flush=True)
    if args.prepare:
        return
    r = {"leaks": leak_bench(index, test_dir, truth)}
    print({k: v for k, v in r["leaks"].items() if k not in ("natural", "within_test_pairs", "missed")}, flush=True)
    RESULTS.write_text(json.dumps(r, indent=1))
    r["uniqueness"] = uniqueness_bench()
    RESULTS.write_text(json.dumps(r, indent=1))
    print(r["uniqueness"]["rooms_seconds"], r["uniqueness"]["ten_k_seconds"], flush=True)


if __name__ == "__main__":
    main()
