"""ANN at 1M on tightly clustered synthetic vectors made from real room descriptors.

Each synthetic vector is ``normalise(w·a + (1-w)·b + noise)`` for two random real descriptors ``a, b`` of
../shared/data/rooms (the shared cached index at the default model, pooling and resolution, quoted from its
meta.json), ``w ~ U(0, 1)``, noise of norm 0.15. They sit in the region real photos occupy (median cosine of two
random vectors ~0.69, of two random room photos ~0.61), but they are not photo-like in their neighbourhoods: with 1M blends of
3,633 seeds, a query's nearest neighbours are near-identical blends of the same seeds (1st and 10th neighbour cosine
~0.95, against ~0.74 for a room photo's 10th neighbour among the real photos at 320 px). The report measures and quotes both.
Stored float16 (what `--vectors float16` gives).

Run from the project root under the bench lock:
    flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.scale_mix
"""

from __future__ import annotations

import gc
import time

import numpy as np

from bench.common import CACHE, shared_index
from bench.report import index_settings, markdown_table, write_section
from lookalike.metrics import ann_recall as recall_at_k
from lookalike.search import TARGET_RECALL, VectorSearch, build_ann, exact_topk, load_ann, save_ann

N = 1_000_000
K = 10
WORK = CACHE / "scale"
NOISE = 0.15  # norm of the added Gaussian noise


def blends(seeds: np.ndarray, n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dim = seeds.shape[1]
    out = np.empty((n, dim), np.float16)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        w = rng.uniform(0, 1, (m, 1)).astype(np.float32)
        x = w * seeds[rng.integers(0, len(seeds), m)] + (1 - w) * seeds[rng.integers(0, len(seeds), m)]
        x += rng.normal(scale=NOISE / np.sqrt(dim), size=x.shape).astype(np.float32)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=N, help="number of synthetic vectors")
    n = ap.parse_args().n
    WORK.mkdir(parents=True, exist_ok=True)
    rooms = shared_index("rooms")
    settings = index_settings(rooms.store.meta)
    seeds = rooms.vectors
    # the real photos' own neighbourhoods, for comparison: each photo against the other 3,632
    real_top, _ = exact_topk(seeds, seeds, K + 1)
    real_pairs = seeds[np.random.default_rng(4).integers(0, len(seeds), 2000)]
    real_random = float(np.median(real_pairs[:1000] @ real_pairs[1000:].T))
    x = blends(seeds, n, seed=1)
    queries = blends(seeds, 300, seed=2).astype(np.float32)
    t = time.perf_counter()
    _, truth = exact_topk(queries, x, K)
    truth_s = time.perf_counter() - t
    s10, _ = exact_topk(queries[:50], x, K)
    sample = x[np.random.default_rng(3).integers(0, n, 2000)].astype(np.float32)
    random_cos = float(np.median(sample[:1000] @ sample[1000:].T))

    t = time.perf_counter()
    index, info = build_ann(x, "ivf", vector_type="float16")
    build_s = time.perf_counter() - t
    path = WORK / "mix-ivf-float16.faiss"
    save_ann(index, path)
    del index
    gc.collect()
    loaded = load_ann(path)
    sweep = []
    tuned = int(info["nprobe"])
    for nprobe in sorted({1, 4, 16, 32, 64, 128, 256, tuned}):
        if nprobe > info["nlist"]:
            continue
        vs = VectorSearch(None, ann=loaded, params={"nprobe": nprobe})
        vs.search(queries[:1], K)
        ms = []
        for j in range(len(queries)):
            t = time.perf_counter()
            vs.search(queries[j : j + 1], K)
            ms.append((time.perf_counter() - t) * 1000)
        _, found = vs.search(queries, K)
        sweep.append([f"{nprobe}" + (" (tuned)" if nprobe == tuned else ""), f"{np.percentile(ms, 50):.2f}",
                      f"{np.percentile(ms, 99):.2f}", f"{recall_at_k(found, truth):.3f}"])  # fmt: skip
        print(sweep[-1], flush=True)
    body = "\n".join(
        [
            f"## ANN on {n:,} tightly clustered synthetic vectors (blends of real room descriptors; issue 8)",
            "",
            f"{n:,} × {seeds.shape[1]} float16 vectors, each a random blend w·a + (1 − w)·b (w uniform in 0–1) of two "
            f"random real room descriptors ({len(seeds):,} seeds: `../shared/data/rooms` indexed with "
            f"{settings['model']}, {settings['pooling']} pooling, {settings['resolution']}) plus Gaussian noise of "
            f"norm {NOISE}, normalised. Two random vectors have "
            f"median cosine {random_cos:.2f} (two random room photos: {real_random:.2f}), but the neighbourhoods are "
            f"much tighter than real photos': a query's 1st / 10th exact neighbour has median cosine "
            f"{np.median(s10[:, 0]):.2f} / {np.median(s10[:, -1]):.2f}, against {np.median(real_top[:, 1]):.2f} / "
            f"{np.median(real_top[:, K]):.2f} for a room photo among the other {len(seeds) - 1:,} real photos: "
            "tightly clustered synthetic vectors, not photo-like neighbourhoods (how IVF fares on a million real "
            "photos is not measured here). "
            f"300 fresh queries; exact ground truth took {truth_s:.1f} s. IVF built by `build_ann` as `lookalike "
            f"index --ann ivf --vectors float16` does: nlist {info['nlist']}, {build_s:.0f} s including tuning to "
            f"recall@{K} ≥ {TARGET_RECALL} (`lookalike.search.TARGET_RECALL`) on 500 of the index's own vectors, "
            f"which chose nprobe {tuned} (recall@{K} {info['recall_at_10']:.3f} there). Index file "
            f"{path.stat().st_size / 1024**3:.2f} GB, memory-mapped. Single-query latency through `VectorSearch`:",
            "",
            markdown_table(["nprobe", "p50 ms", "p99 ms", f"recall@{K} (held-out)"], sweep),
        ]
    )
    settings = {
        **settings,
        "data": f"{n:,} blends of the rooms index's {len(seeds):,} vectors, noise {NOISE}, float16",
        "k": K,
        "queries": len(queries),
        "ANN tuning target": f"recall@{K} ≥ {TARGET_RECALL}",
    }
    write_section("scale_mix", body, settings)


if __name__ == "__main__":
    main()
