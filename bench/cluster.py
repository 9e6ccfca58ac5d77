"""Clustering benchmark: ARI/NMI of both methods on products and on a near-duplicate set made from flowers12, the
adaptive-threshold rule against fixed thresholds on collections it was not tuned on, near-duplicate detection, and
the scale run (kNN graph + clustering of 1M vectors) against a dense N×N approach.

Run from the project folder: ``flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.cluster [--skip-scale]``.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import CACHE, dataset
from bench.report import commit_stamp, index_settings, markdown_table, now_stamp, write_section

DUPS = CACHE / "flowers12-dups"
MODEL, POOLING = "efficientnet-lite0", "gem"  # the defaults every index here is built with (checked in quality())


def _variants(img: Image.Image, rng: np.random.Generator) -> dict[str, Image.Image]:
    """The copies a photo collection accumulates: crops, rescales, recompressions."""
    w, h = img.size

    def crop(frac: float) -> Image.Image:
        cw, ch = int(w * frac), int(h * frac)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img.crop((x0, y0, x0 + cw, y0 + ch))

    def jpeg(im: Image.Image, q: int) -> Image.Image:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=q)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    return {
        "orig": img,
        "crop80": crop(0.8),
        "half": img.resize((w // 2, h // 2), Image.Resampling.LANCZOS),
        "double": img.resize((w * 2, h * 2), Image.Resampling.BICUBIC),
        "q20": jpeg(img, 20),
        "crop90_q50": jpeg(crop(0.9).resize((w, h), Image.Resampling.BILINEAR), 50),
    }


def make_dups() -> Path:
    """flowers12 photos, each with 5 altered copies, one folder (= one label) per photo, under /tmp/lookalike-cache."""
    done = DUPS / ".complete"
    if done.exists():
        return DUPS
    rng = np.random.default_rng(0)
    for src in sorted(dataset("flowers12").rglob("*.jpg")):
        group = DUPS / f"{src.parent.name}_{src.stem}"
        group.mkdir(parents=True, exist_ok=True)
        img = Image.open(src).convert("RGB")
        for name, im in _variants(img, rng).items():
            im.save(group / f"{name}.jpg", quality=92)
    done.touch()
    return DUPS


def make_room_dups(per_class: int = 100) -> Path:
    """100 photos per room type of ../shared/data/rooms, each with the same 5 altered copies (a collection the
    thresholds were never tuned on, in another domain)."""
    out = CACHE / "rooms-dups"
    if (out / ".complete").exists():
        return out
    rng = np.random.default_rng(0)
    for cls in sorted(p for p in dataset("rooms").iterdir() if p.is_dir()):
        files = sorted(cls.glob("*.jpg"))
        for src in [files[i] for i in sorted(rng.choice(len(files), per_class, replace=False))]:
            group = out / f"{cls.name}_{src.stem}"
            group.mkdir(parents=True, exist_ok=True)
            img = Image.open(src).convert("RGB")
            for name, im in _variants(img, rng).items():
                im.save(group / f"{name}.jpg", quality=92)
    (out / ".complete").touch()
    return out


def dups_index(resolution: int = 224, rooms: bool = False):  # noqa: ANN201
    from lookalike.index import Index

    src, name = (make_room_dups(), "rooms-dups") if rooms else (make_dups(), "flowers12-dups")
    path = CACHE / (f"index-{name}" + ("" if resolution == 224 and not rooms else f"-{resolution}"))
    return Index.build(src, path, labels="folders", progress=False, resolution=resolution)


def dup_truth(idx) -> np.ndarray:  # noqa: ANN001
    """Group of each image of a near-duplicate set, from how the set was made: the source photo it was generated
    from (its folder: the untouched original and its 5 altered copies). Nothing here looks at the vectors being
    evaluated."""
    folders = np.array([n.split("/")[0] for n in idx.names])
    return np.unique(folders, return_inverse=True)[1]


def pixel_twins(idx, threshold: float = 0.98) -> int:  # noqa: ANN001
    """How many source photos of a near-duplicate set have another source photo that looks the same in pixels
    (correlation ≥ ``threshold`` between 32×32 grey thumbnails of the untouched originals; independent of the
    descriptor). The truth keeps them apart, so a method that joins them is counted wrong."""
    orig = [p for p, n in zip(idx.paths, idx.names, strict=True) if n.endswith("/orig.jpg")]
    thumbs = np.stack(
        [np.asarray(Image.open(p).convert("L").resize((32, 32), Image.Resampling.BILINEAR), np.float32).ravel()
         for p in orig]
    )  # fmt: skip
    thumbs -= thumbs.mean(axis=1, keepdims=True)
    thumbs /= np.linalg.norm(thumbs, axis=1, keepdims=True) + 1e-9
    corr = thumbs @ thumbs.T
    np.fill_diagonal(corr, -1)
    return int((corr.max(axis=1) >= threshold).sum())


# --- measuring in a child process (peak memory of exactly one approach) ----------------------------------------------


def _child(conn, fn: str, kwargs: dict) -> None:  # noqa: ANN001
    t0 = time.perf_counter()
    result = globals()[fn](**kwargs)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["peak_gib"] = round(_peak_rss_kib() / 1024**2, 2)
    conn.send(result)


def _peak_rss_kib() -> int:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux carries that across the fork + exec
    that starts a spawned child, so a child of a big parent would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def measured(fn: str, **kwargs: object) -> dict:
    """Run ``fn(**kwargs)`` in a fresh process; its result plus wall time and peak resident memory."""
    ctx = mp.get_context("spawn")
    a, b = ctx.Pipe()
    p = ctx.Process(target=_child, args=(b, fn, kwargs))
    p.start()
    out = a.recv()
    p.join()
    return out


def synthetic(n: int, dim: int, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Random unit vectors (no structure) or Gaussian blobs (groups of ~50 around random centres)."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        x = rng.standard_normal((n, dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True), None
    groups = max(1, n // 50)
    centres = rng.standard_normal((groups, dim), dtype=np.float32)
    y = rng.integers(0, groups, n)
    x = centres[y]
    x += rng.standard_normal((n, dim), dtype=np.float32) * 0.8
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, y


def run_graph(n: int, dim: int, kind: str, recall_sample: int = 1000) -> dict:
    """kNN graph (exact or IVF as knn_graph picks) + graph clustering with adaptive thresholds."""
    from sklearn.metrics import adjusted_rand_score

    from lookalike.cluster import GraphParams, graph_labels, suggest_thresholds
    from lookalike.search import EXACT_GRAPH_LIMIT, knn_graph

    x, y = synthetic(n, dim, kind)
    t0 = time.perf_counter()
    ids, scores = knn_graph(x, 10)
    t_knn = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = suggest_thresholds(scores, x)
    labels = graph_labels(ids, scores, GraphParams(strong=s.strong, weak=s.weak))
    t_cluster = time.perf_counter() - t0
    out = {
        "graph": "exact" if n <= EXACT_GRAPH_LIMIT else "IVF",
        "knn_s": round(t_knn, 1),
        "cluster_s": round(t_cluster, 1),
        "clusters": int(labels.max()) + 1,
        "noise": int((labels < 0).sum()),
    }
    if y is not None:
        lab = labels.copy()
        nz = np.flatnonzero(lab < 0)
        lab[nz] = lab.max() + 1 + np.arange(len(nz))
        out["ari"] = round(float(adjusted_rand_score(y, lab)), 4)
    if n > EXACT_GRAPH_LIMIT:
        import faiss

        rng = np.random.default_rng(1)
        q = rng.choice(n, recall_sample, replace=False)
        flat = faiss.IndexFlatIP(dim)
        flat.add(x)
        _, exact = flat.search(x[q], 11)
        hits = [len(set(exact[r][exact[r] != qi][:10]) & set(ids[qi])) for r, qi in enumerate(q)]
        out["recall@10"] = round(float(np.mean(hits)) / 10, 3)
    return out


def run_dense(n: int, dim: int, kind: str) -> dict:
    """The N×N approach: full similarity matrix, threshold, connected components (what does not scale)."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    from lookalike.cluster import suggest_thresholds
    from lookalike.search import knn_graph

    x, _ = synthetic(n, dim, kind)
    strong = suggest_thresholds(knn_graph(x[:2000], 10)[1], x[:2000]).strong
    t0 = time.perf_counter()
    sims = x @ x.T
    adj = sparse.csr_matrix(sims >= strong)
    del sims
    comps = connected_components(adj, directed=False)[0]
    return {"graph": "dense N×N", "knn_s": round(time.perf_counter() - t0, 1), "components": int(comps)}


# --- quality on real photos -----------------------------------------------------------------------------------------


def _metrics(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as skm

    lab = labels.copy()
    nz = np.flatnonzero(lab < 0)
    lab[nz] = lab.max() + 1 + np.arange(len(nz))  # noise = singletons
    h, c, v = skm.homogeneity_completeness_v_measure(truth, lab)
    return {"ari": round(float(skm.adjusted_rand_score(truth, lab)), 4), "nmi": round(float(v), 4),
            "homogeneity": round(float(h), 4), "completeness": round(float(c), 4)}  # fmt: skip


def quality() -> tuple[str, dict]:
    from bench.common import shared_index
    from lookalike.cluster import GraphParams, cluster_index

    sets = [  # (name, index, tuned on?)
        ("products, 224 px", shared_index("products", resolution=224), True),
        ("flowers12 near-duplicates, 224 px", dups_index(), True),
        ("flowers12 species, 224 px", shared_index("flowers12", resolution=224), True),
        ("rooms (5 room types), 224 px", shared_index("rooms", resolution=224), False),
        ("rooms near-duplicates, 320 px", dups_index(320, rooms=True), False),
        ("flowers12 near-duplicates, 320 px", dups_index(320), False),
        ("products, 320 px", shared_index("products", resolution=320), False),
    ]
    runs = [
        ("graph, default (adaptive thresholds, local scaling 0.95)", "graph", {}, False),
        ("graph, adaptive thresholds, no local scaling", "graph", {"params": GraphParams(local_ratio=0)}, False),
        (
            "graph, seed's fixed 0.35 / 0.2 (with local scaling)",
            "graph",
            {"params": GraphParams(strong=0.35, weak=0.2)},
            False,
        ),
        ("HDBSCAN (min 5, second pass 2)", "hdbscan", {}, True),
        ("HDBSCAN, PCA 64 first", "hdbscan", {"pca": 64}, False),
    ]
    rows, raw = [], {}
    for name, idx, _ in sets:  # each row's label quotes the resolution its index was really built at
        meta = index_settings(idx.store.meta)
        assert f", {meta['resolution']}" in name and (meta["model"], meta["pooling"]) == (MODEL, POOLING), (name, meta)
    for name, idx, tuned in sets:
        dups = "near-duplicates" in name
        truth = dup_truth(idx) if dups else np.unique([str(v) for v in idx.labels], return_inverse=True)[1]
        for run_name, method, kw, small_only in runs:
            if small_only and not name.startswith("products, 224"):
                continue  # HDBSCAN in 1280 dims takes minutes; the PCA 64 row covers the other sets
            r = cluster_index(idx, method, save=False, **kw)
            m = {**r.metrics, **_metrics(r.labels, truth)}
            raw[f"{name} / {run_name}"] = {**m, "params": r.params}
            rows.append(
                [name + (" (tuned on)" if tuned else ""), run_name, m["images"], int(truth.max()) + 1, m["clusters"],
                 m["noise"], m["ari"], m["nmi"], m["homogeneity"], m["completeness"], m["seconds"]]
            )  # fmt: skip
            print(rows[-1], flush=True)
    header = ["collection", "method", "images", "true groups", "clusters", "noise", "ARI", "NMI", "homogeneity",
              "completeness", "seconds"]  # fmt: skip
    return markdown_table(header, rows), raw


def _pair_scores(groups: list[dict], truth_of: dict[str, int], true_pairs: int) -> tuple[float, float]:
    from itertools import combinations

    pairs = [(a, b) for g in groups for a, b in combinations(g["paths"], 2)]
    tp = sum(truth_of[a] == truth_of[b] for a, b in pairs)
    return round(tp / max(1, len(pairs)), 3), round(tp / true_pairs, 3)


def dedupe_quality() -> str:
    from lookalike.dedupe import near_duplicates

    idx = dups_index()
    x, names, labels = idx.vectors, idx.names, idx.labels
    orig = {lab: i for i, (lab, n) in enumerate(zip(labels, names, strict=True)) if n.endswith("/orig.jpg")}
    var_rows = []
    for v in ("crop80", "half", "double", "q20", "crop90_q50"):
        sims = [
            float(x[i] @ x[orig[lab]])
            for i, (lab, n) in enumerate(zip(labels, names, strict=True))
            if n.endswith(f"/{v}.jpg")
        ]
        var_rows.append([v, round(float(np.quantile(sims, 0.05)), 3), round(float(np.median(sims)), 3)])
    rows = []
    for set_name, index in (("flowers12, 224 px", idx), ("rooms, 320 px (not tuned on)", dups_index(320, rooms=True))):
        truth = dup_truth(index)
        twins = pixel_twins(index)
        truth_of = dict(zip(index.names, truth.tolist(), strict=True))
        true_pairs = int(sum(c * (c - 1) // 2 for c in np.bincount(truth)))
        configs = [(f"cosine ≥ {t}", t, 0.0) for t in (0.85, 0.9, 0.95)]
        configs += [("cosine ≥ 0.8, pixel ≥ 0.9 (default)", 0.8, 0.9), ("cosine ≥ 0.85, pixel ≥ 0.9", 0.85, 0.9)]
        configs += [("cosine ≥ 0.8, pixel ≥ 0.95", 0.8, 0.95)]
        for label, t, pixel in configs:
            notes: list[str] = []
            t0 = time.perf_counter()
            groups = near_duplicates(index.vectors, index.names, t, paths=index.paths, pixel=pixel, notes=notes)
            secs = round(time.perf_counter() - t0, 1)
            prec, rec = _pair_scores(groups, truth_of, true_pairs)
            cand = next((n.split(" candidate")[0].split(" of ")[1] for n in notes if "candidate" in n), "—")
            rows.append([set_name, label, len(groups), prec, rec, cand, secs])
            print(rows[-1], flush=True)
        rows.append([set_name, f"({twins} of {truth.max() + 1} source photos look like another source photo in pixels; "
                     "their pairs count as wrong)", "", "", "", "", ""])  # fmt: skip
    return (
        "Cosine between each flowers12 photo (224 px) and its altered copy (5th percentile, median):\n\n"
        + markdown_table(["copy", "q05", "median"], var_rows)
        + "\n\n`dedupe` settings (pairs inside reported groups; a pair is right when both come from the same source "
        'photo). "pixel" = the aligned-NCC check of `lookalike.dedupe.pixels` on the kNN candidate pairs; '
        "0 = cosine alone, as before this check existed. Seconds include reading the thumbnails.\n\n"
        + markdown_table(
            ["set", "setting", "groups", "pair precision", "pair recall", "candidate pairs checked", "seconds"], rows
        )
    )


def scale(sizes: list[int]) -> str:
    rows = []
    for kind in ("random", "blobs"):
        for n in sizes:
            r = measured("run_graph", n=n, dim=256, kind=kind)
            rows.append(
                [
                    kind,
                    f"{n:,}",
                    r["graph"],
                    r["knn_s"],
                    r["cluster_s"],
                    r["seconds"],
                    r["peak_gib"],
                    r.get("recall@10", "exact"),
                    r["clusters"],
                    r.get("ari", "—"),
                ]
            )
            print(rows[-1], flush=True)
            if n <= 20_000:
                d = measured("run_dense", n=n, dim=256, kind=kind)
                rows.append(
                    [
                        kind,
                        f"{n:,}",
                        d["graph"],
                        d["knn_s"],
                        "—",
                        d["seconds"],
                        d["peak_gib"],
                        "exact",
                        f"{d['components']} components",
                        "—",
                    ]
                )
                print(rows[-1], flush=True)
    return markdown_table(
        [
            "vectors",
            "N",
            "graph",
            "kNN / matrix s",
            "clustering s",
            "total s (incl. data)",
            "peak GiB",
            "recall@10 vs exact",
            "clusters",
            "ARI",
        ],
        rows,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--only-scale", action="store_true")
    ap.add_argument("--sizes", default="10000,20000,1000000")
    args = ap.parse_args()
    cache = CACHE / "bench-cluster.json"
    saved = json.loads(cache.read_text()) if cache.exists() else {}
    if not args.only_scale:
        saved["quality"], raw = quality()
        saved["dedupe"] = dedupe_quality()
        (CACHE / "bench-cluster-raw.json").write_text(json.dumps(raw, indent=1, default=str))
    if not args.skip_scale:
        saved["scale"] = scale([int(s) for s in args.sizes.split(",")])
        saved["scale_measured"] = f"{now_stamp()}, {commit_stamp()}"
    if not args.only_scale:
        saved["quality_measured"] = f"{now_stamp()}, {commit_stamp()}"
    cache.write_text(json.dumps(saved))
    from lookalike.cluster import RULE

    body = f"""## Cluster

Graph method = symmetrised FAISS kNN graph (k = 10), strong components over mutual neighbours, growth and merging
along weak edges, GPS merging, leftover singletons grouped; default thresholds from the similarity distribution
({RULE}). HDBSCAN = scikit-learn's, on L2-normalised embeddings, with the second pass (min size 2) on its noise.
Local scaling (the default since session 2): an edge counts only if it scores at least 0.95 × the smaller of its
endpoints' nearest-neighbour similarities, so tight groups (copies) do not chain into loose ones (a subject).
Noise counts as singleton clusters in ARI/NMI; "NMI" is the arithmetic-mean NMI (= V-measure). Descriptor:
EfficientNet-Lite0 GeM at the resolution given. The thresholds' rule was set on products, the test sample photos and
synthetic Gaussian blobs; the local-scaling ratio on products, flowers12 near-duplicates and species (all at 224 px).
Collections not marked "(tuned on)" were never looked at while choosing either. In near-duplicate sets the true group
of every image is the source photo it was generated from (its original and 5 altered copies), whatever the vectors say;
source photos that are themselves near-copies of one another (Oxford Flowers holds some) stay separate groups.

{saved.get("quality", "(not run)")}

### Near-duplicates (`lookalike dedupe`)

{saved.get("dedupe", "(not run)")}

### Scale: kNN graph + graph clustering, 256-d vectors, 2 cores

Each row runs in its own process (peak = that process's maximum resident memory, including the vectors). Above
200,000 vectors the kNN graph uses an IVF index (4·√N cells, 16 probed); its recall@10 is against exact search for
1,000 sampled vectors. "dense N×N" is the approach that does not scale: the full similarity matrix, thresholded, then
connected components. Random vectors have no groups (recall of any ANN index is at its worst there); blobs are
groups of ~50 around random centres, so the clustering step does real work.

{saved.get("scale", "(not run)")}

_Quality and near-duplicate tables measured {saved.get("quality_measured", "?")}; scale table {saved.get("scale_measured", "?")}._
"""
    settings = {
        "model": MODEL,
        "pooling": POOLING,
        "resolution": "224 or 320 px as each row says (checked against each index's meta.json)",
        "kNN graph k": 10,
        "data": "products (3,792), flowers12 (720; + 5 generated copies each), rooms (3,633; 100 per class + 5 copies "
        "each), synthetic 256-d vectors",
    }
    if not args.skip_scale:
        settings["scale sizes"] = args.sizes
    write_section("cluster", body, settings)


if __name__ == "__main__":
    main()
