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
from pathlib import Path  # noqa: E402

from PIL import Image, ImageOps  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import CACHE, dataset  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepare", action="store_true", help="only make the folders and the index")
    args = ap.parse_args()
    index, test_dir, truth = prepare()
    print(f"index: {len(index)} images; test: {test_dir}; planted: {len(truth)}", flush=True)
    if args.prepare:
        return


if __name__ == "__main__":
    main()
