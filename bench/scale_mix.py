"""ANN at 1M on photo-like vectors: blends of real room descriptors, the hard case Gaussian clusters are not.

Gaussian clusters in 1280-d (bench/scale.py) are separated so cleanly that one IVF cell holds a whole cluster. Real
descriptors are not like that: two random room photos have cosine ~0.59, a photo's 10th neighbour ~0.71. Here each
synthetic vector is ``normalise(w·a + (1-w)·b + noise)`` for two random real descriptors ``a, b`` of
../shared/data/rooms (default model, GeM, 224 px; the shared cached index), ``w ~ U(0, 1)``: a continuum in the
region real photos occupy, with no clusters to exploit. Stored float16 (what `--vectors float16` gives).

Run from the project root under the bench lock:
    flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.scale_mix
"""

from __future__ import annotations

import gc
import time

import numpy as np

from bench.common import CACHE, shared_index
from bench.report import markdown_table, write_section
from lookalike.search import VectorSearch, build_ann, exact_topk, load_ann, recall_at_k, save_ann

N = 1_000_000
K = 10
WORK = CACHE / "scale"


def blends(seeds: np.ndarray, n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dim = seeds.shape[1]
    out = np.empty((n, dim), np.float16)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        w = rng.uniform(0, 1, (m, 1)).astype(np.float32)
        x = w * seeds[rng.integers(0, len(seeds), m)] + (1 - w) * seeds[rng.integers(0, len(seeds), m)]
        x += rng.normal(scale=0.15 / np.sqrt(dim), size=x.shape).astype(np.float32)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    seeds = shared_index("rooms").vectors
    x = blends(seeds, N, seed=1)
    queries = blends(seeds, 300, seed=2).astype(np.float32)
    t = time.perf_counter()
    _, truth = exact_topk(queries, x, K)
    truth_s = time.perf_counter() - t
    s10, _ = exact_topk(queries[:50], x, K)
    sample = x[np.random.default_rng(3).integers(0, N, 2000)].astype(np.float32)
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
            "## ANN on 1M photo-like vectors (issue 8)",
            "",
            f"{N:,} × {seeds.shape[1]} float16 blends of two random real room descriptors ({len(seeds):,} seeds) "
            f"plus a little noise: median cosine of two random vectors {random_cos:.2f}, of a query's 1st / 10th "
            f"exact neighbour {np.median(s10[:, 0]):.2f} / {np.median(s10[:, -1]):.2f}. 300 fresh queries; exact "
            f"ground truth took {truth_s:.1f} s. IVF built by `build_ann` as `lookalike index --ann ivf --vectors "
            f"float16` does: nlist {info['nlist']}, {build_s:.0f} s including tuning, which chose nprobe {tuned} "
            f"(recall@10 {info['recall_at_10']:.3f} on 500 of the index's own vectors). Index file "
            f"{path.stat().st_size / 1024**3:.2f} GB, memory-mapped. Single-query latency through `VectorSearch`:",
            "",
            markdown_table(["nprobe", "p50 ms", "p99 ms", "recall@10 (held-out)"], sweep),
        ]
    )
    write_section("scale_mix", body)


if __name__ == "__main__":
    main()
