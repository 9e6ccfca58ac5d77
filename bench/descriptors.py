"""Which pooling of the offline default's dense features serves rooms and flowers best (issue 3).

Dense features are extracted once per dataset × resolution and cached under /tmp/lookalike-cache as float16, then
every pooling (mean, GeM, VLAD-16/32/64 hard and soft), with and without PCA-whitening, is evaluated from the cache:

- rooms: 5-fold stratified cross-validated kNN accuracy (k=10, cosine, scikit-learn);
- flowers12: mAP@R (every image queries all the others);
- descriptor size and images/s (feature extraction + pooling, the cost of indexing one image).

VLAD vocabularies and PCA-whitening are fitted on each whole dataset without labels, as ``lookalike index`` fits
them on the database it indexes; the held-out folds of the kNN therefore took part in those unsupervised fits.

Run: ``flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.descriptors [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.common import CACHE, dataset
from bench.report import markdown_table, write_section

MODEL = "efficientnet-lite0"


def _labelled_files(name: str) -> tuple[list[Path], np.ndarray]:
    from lookalike.images import find_images

    root = dataset(name)
    files = sorted(find_images(root))
    labels = np.array([p.relative_to(root).parts[0] for p in files])
    return files, labels


def dense_features(name: str, resolution: int, model: str = MODEL) -> dict[str, np.ndarray | float]:
    """(N, C, h, w) float16 features, valid cells, labels and extraction seconds; cached on disk."""
    from lookalike.aggregate import MeanPooling
    from lookalike.embed import Describer
    from lookalike.models import create_model

    key = CACHE / f"dense-{name}-{model}-{resolution}"
    if (key / "done.json").is_file():
        info = json.loads((key / "done.json").read_text())
        return {
            "features": np.load(key / "features.npy", mmap_mode="r"),
            "cells": np.load(key / "cells.npy"),
            "labels": np.load(key / "labels.npy"),
            "seconds": info["seconds"],
        }
    files, labels = _labelled_files(name)
    describer = Describer(create_model(model), MeanPooling(), resolution)
    feats: list[np.ndarray] = []
    cells: list[np.ndarray] = []
    started = time.perf_counter()
    batch = 32
    with ThreadPoolExecutor(max_workers=2) as pool:
        for start in range(0, len(files), batch):
            prepared = list(pool.map(describer.prepare_file, files[start : start + batch]))
            bad = [p.path for p in prepared if p.pixels is None]
            if bad:
                sys.exit(f"unreadable benchmark images: {bad[:3]}")
            pixels = np.stack([p.pixels for p in prepared])
            valid = np.array([p.valid for p in prepared])
            f, c = describer.features(pixels, valid)
            feats.append(f.astype(np.float16))
            cells.append(c)
    seconds = time.perf_counter() - started
    key.mkdir(parents=True, exist_ok=True)
    np.save(key / "features.npy", np.concatenate(feats))
    np.save(key / "cells.npy", np.concatenate(cells))
    np.save(key / "labels.npy", labels)
    (key / "done.json").write_text(json.dumps({"seconds": seconds, "n": len(files)}))
    print(f"{name}@{resolution}: extracted {len(files)} images in {seconds:.1f}s", flush=True)
    return dense_features(name, resolution, model)


def map_at_r(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Mean average precision at R (Musgrave et al.): every image queries all others, R = its class size - 1.

    Ranking here, scoring by :func:`lookalike.evaluate.map_at_r` (issue 4's implementation of the metric).
    """
    from lookalike.metrics import map_at_r as score

    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    _, counts = np.unique(labels, return_counts=True)
    r = np.array([counts[np.searchsorted(np.unique(labels), lab)] - 1 for lab in labels])
    order = np.argsort(-sims, axis=1)[:, : int(r.max())]
    return float(score(list(labels), labels[order], r))


def knn_accuracy(vectors: np.ndarray, labels: np.ndarray, k: int = 10, folds: int = 5) -> float:
    """5-fold stratified CV accuracy of a cosine kNN (scikit-learn, distance-weighted votes).

    One Gram matrix serves all folds (scikit-learn's ``metric="precomputed"``), which keeps 80k-dim VLAD cheap.
    """
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    v = np.ascontiguousarray(vectors, np.float32)
    dist = np.clip(1.0 - v @ v.T, 0.0, 2.0)
    correct = 0
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=0).split(v, labels):
        clf = KNeighborsClassifier(n_neighbors=k, metric="precomputed", weights="distance")
        clf.fit(dist[np.ix_(train, train)], labels[train])
        correct += int((clf.predict(dist[np.ix_(test, train)]) == labels[test]).sum())
    return correct / len(labels)


def poolings(alpha: float) -> list[tuple[str, dict]]:
    out: list[tuple[str, dict]] = [("mean", {"name": "mean"}), ("GeM p=3", {"name": "gem", "p": 3.0})]
    for k in (16, 32, 64):
        for soft in (False, True):
            out.append(
                (
                    f"VLAD-{k} {'soft' if soft else 'hard'}",
                    {"name": "vlad", "clusters": k, "soft": soft, "alpha": alpha},
                )
            )
    return out


def fit_sample(feats: np.ndarray, cells: np.ndarray, seed: int = 0) -> np.ndarray:
    """The library's bound: at most 500 images and 100k local descriptors for the vocabulary."""
    from lookalike.aggregate import local_descriptors
    from lookalike.vocab import MAX_DESCRIPTORS, MAX_IMAGES

    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(len(feats))[:MAX_IMAGES])
    per = max(1, MAX_DESCRIPTORS // len(chosen))
    out = []
    for i in chosen:
        d = local_descriptors(np.asarray(feats[i : i + 1], np.float32), cells[i : i + 1])[0]
        if len(d) > per:
            d = d[rng.choice(len(d), per, replace=False)]
        out.append(d)
    return np.concatenate(out)[:MAX_DESCRIPTORS]


def describe(config: dict, data: dict) -> tuple[np.ndarray, float]:
    """Vectors of a whole dataset and the seconds per image spent pooling them (vocabulary fitted first)."""
    from lookalike.aggregate import make_pooling

    pooling = make_pooling(config)
    feats, cells = data["features"], data["cells"]
    if getattr(pooling, "needs_fit", False):
        pooling.fit(fit_sample(feats, cells))
    started = time.perf_counter()
    vectors = np.concatenate(
        [
            pooling.transform(np.asarray(feats[s : s + 256], np.float32), cells[s : s + 256])
            for s in range(0, len(feats), 256)
        ]
    )
    return vectors, (time.perf_counter() - started) / len(feats)


def whiten(vectors: np.ndarray, pca: int | None) -> tuple[np.ndarray, float]:
    """PCA-whitening fitted on the dataset (as on an index's database) and the seconds per image to apply it."""
    from lookalike.aggregate import PCAWhitening, l2_normalize

    if not pca:
        return vectors, 0.0
    post = PCAWhitening(pca).fit(vectors)
    started = time.perf_counter()
    out = l2_normalize(post.transform(vectors)).astype(np.float32)
    return out, (time.perf_counter() - started) / len(vectors)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--extract-only", action="store_true")
    parser.add_argument("--resolutions", default="224,320")
    parser.add_argument("--alpha", type=float, default=None, help="soft-assignment alpha (default: the library's)")
    parser.add_argument("--only", default="", help="comma-separated pooling labels to run (for quick checks)")
    parser.add_argument("--no-write", action="store_true", help="print, do not write BENCHMARKS.md")
    parser.add_argument("--pca", type=int, default=512)
    args = parser.parse_args()
    from lookalike.aggregate import VLADPooling

    alpha = args.alpha if args.alpha is not None else VLADPooling().alpha
    resolutions = [int(r) for r in args.resolutions.split(",")]
    for res in resolutions:
        for name in ("rooms", "flowers12"):
            dense_features(name, res)
    if args.extract_only:
        return
    header = ["resolution", "pooling", "PCA-whitening", "dim", "rooms kNN acc (5-fold)", "flowers12 mAP@R", "images/s"]
    rows: list[list[object]] = []
    results: list[dict] = []
    for res in resolutions:
        rooms, flowers = dense_features("rooms", res), dense_features("flowers12", res)
        extract_per_image = float(rooms["seconds"]) / len(rooms["labels"])
        for label, config in poolings(alpha):
            if args.only and label not in args.only.split(","):
                continue
            t0 = time.perf_counter()
            rooms_raw, rooms_pool = describe(config, rooms)
            flowers_raw, _ = describe(config, flowers)
            for pca in (None, args.pca):
                rv, rooms_post = whiten(rooms_raw, pca)
                acc = knn_accuracy(rv, np.asarray(rooms["labels"]))
                fv, _ = whiten(flowers_raw, pca)
                mapr = map_at_r(fv, np.asarray(flowers["labels"]))
                ips = 1.0 / (extract_per_image + rooms_pool + rooms_post)
                r = {"resolution": res, "pooling": label, "pca": pca, "dim": rv.shape[1], "acc": acc, "mapr": mapr,
                     "ips": ips}  # fmt: skip
                results.append(r)
                rows.append(
                    [
                        res,
                        label,
                        f"→ {pca}" if pca else "no",
                        rv.shape[1],
                        f"{100 * acc:.1f}%",
                        f"{mapr:.3f}",
                        f"{ips:.0f}",
                    ]
                )
                print(" | ".join(str(c) for c in rows[-1]), f"({time.perf_counter() - t0:.0f}s)", flush=True)
                del rv, fv
            del rooms_raw, flowers_raw
    if args.no_write or args.only:
        return
    # runs at other resolutions (same code) are kept, so resolutions can be measured one run at a time
    saved = CACHE / "descriptors-results.json"
    if saved.is_file():
        old = [r for r in json.loads(saved.read_text()) if r["resolution"] not in resolutions]
        results = sorted(old + results, key=lambda r: r["resolution"])
        resolutions = sorted({r["resolution"] for r in results})
    saved.write_text(json.dumps(results, indent=1))
    rows = [
        [r["resolution"], r["pooling"], f"→ {r['pca']}" if r["pca"] else "no", r["dim"], f"{100 * r['acc']:.1f}%",
         f"{r['mapr']:.3f}", f"{r['ips']:.0f}"]
        for r in results
    ]  # fmt: skip
    base = next(r for r in results if r["resolution"] == resolutions[0] and r["pooling"] == "mean" and not r["pca"])
    best = max(results, key=lambda r: r["acc"])
    body = (
        "## Descriptors: pooling × resolution × PCA-whitening (efficientnet-lite0)\n\n"
        "Dense features of the offline default backbone extracted once per dataset × resolution, then pooled every way. "
        "rooms: 3,633 photos, 5 classes, 5-fold stratified kNN (k=10, cosine, distance-weighted votes). "
        "flowers12: 720 photos, 12 species, mAP@R (each image queries the other 719). "
        f"VLAD vocabularies (spherical k-means, FAISS, on at most 500 images / 100k local descriptors; soft assignment "
        f"alpha={alpha:g}) and PCA-whitening (`--pca 512`: the library's partial whitening, eigenvalues^-0.25 after "
        "adding their mean) are fitted per dataset on all its images without labels, as `lookalike index` fits them "
        "on the collection it indexes "
        "(so the kNN's held-out folds took part in those unsupervised fits). "
        "images/s = 1 / (feature extraction incl. JPEG decoding + pooling + whitening, per image) on rooms.\n\n"
        + markdown_table(header, rows)
        + f"\n\nBaseline mean pooling at {base['resolution']} px: {100 * base['acc']:.1f}% rooms kNN accuracy. "
        f"Best rooms accuracy: {best['pooling']} at {best['resolution']} px"
        + (f" with PCA-whitening to {best['pca']}" if best["pca"] else "")
        + f": {100 * best['acc']:.1f}% ({100 * (best['acc'] - base['acc']):+.1f} points).\n"
    )
    settings = {
        "model": MODEL,
        "resolutions": ", ".join(f"{r} px" for r in resolutions),
        "data": "rooms (3,633, kNN k=10, 5 folds), flowers12 (720, mAP@R)",
        "VLAD alpha": f"{alpha:g}",
        "PCA-whitening": args.pca,
    }
    write_section("descriptors", body, settings)


if __name__ == "__main__":
    main()
