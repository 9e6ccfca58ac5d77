"""Places benchmark: geometric verification (local features + MAGSAC++) against the global vectors alone, on the
real multi-view photos of ../shared/data/places (berlin 3, lund 29, sceaux 11) mixed with ≥ 500 distractors (rooms,
interiors, flowers).

Measures clustering (ARI; is each place one cluster holding nothing else), pairs (precision of verified pairs
against cosine-ranked pairs at equal recall), search (P@5, mAP@100 of place queries with and without re-ranking,
and the latency re-ranking adds) and cost (features images/s, bytes per image, verified pairs/s, projected time for
11,300 photos).

Run from the project folder: ``flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.places``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

from bench.common import CACHE, dataset
from bench.report import index_settings, markdown_table, write_section

MIX = CACHE / "places-mix"
PLACES = ("berlin", "lund", "sceaux")
PROJECT = 11_300


def make_mix(rooms_per_class: int = 80, flowers_per_class: int = 10) -> Path:
    """The three places plus distractors, one folder per place or distractor source (copies, never links: the
    indexer does not follow symbolic links)."""
    if (MIX / ".complete").exists():
        return MIX
    rng = np.random.default_rng(0)
    for place in PLACES:
        shutil.copytree(dataset("places") / place, MIX / place, dirs_exist_ok=True)

    def sample(data: str, prefix: str, per_class: int) -> None:
        for cls in sorted(p for p in dataset(data).iterdir() if p.is_dir()):
            files = sorted(cls.glob("*.jpg"))
            out = MIX / f"{prefix}-{cls.name}"
            out.mkdir(parents=True, exist_ok=True)
            for i in sorted(rng.choice(len(files), per_class, replace=False)):
                shutil.copy(files[i], out / files[i].name)

    sample("rooms", "rooms", rooms_per_class)  # the same draws in the same order as before: the same mix
    shutil.copytree(dataset("interiors"), MIX / "interiors", dirs_exist_ok=True)
    sample("flowers12", "flowers", flowers_per_class)
    (MIX / ".complete").touch()
    return MIX


def place_of(labels: list[str | None]) -> np.ndarray:
    return np.array([lab if lab in PLACES else "" for lab in labels], dtype=object)


def cluster_scores(pred: np.ndarray, place: np.ndarray) -> dict[str, object]:
    """ARI with every distractor its own class (it belongs to no place) and noise as singletons; per place, whether
    its photos form one cluster holding nothing else."""
    n = len(pred)
    truth = np.where(place != "", place, np.array([f"d{i}" for i in range(n)], dtype=object))
    p = np.where(pred >= 0, pred.astype(str), np.array([f"n{i}" for i in range(n)], dtype=object))
    out: dict[str, object] = {"ari": round(float(adjusted_rand_score(truth, p)), 4)}
    on = place != ""
    out["ari_places"] = round(float(adjusted_rand_score(place[on], p[on])), 4)
    for name in PLACES:
        inside = np.flatnonzero(place == name)
        labs = set(pred[inside].tolist())
        one = len(labs) == 1 and next(iter(labs)) >= 0
        members = np.flatnonzero(pred == next(iter(labs))) if one else np.array([], int)
        intruders = int((place[members] != name).sum()) if one else 0
        biggest = max((int((pred[inside] == lab).sum()) for lab in labs if lab >= 0), default=0)
        out[name] = (
            "one cluster, nothing else"
            if one and intruders == 0
            else f"one cluster + {intruders} others"
            if one
            else f"{len(labs)} groups (largest {biggest}/{len(inside)})"
        )
    out["distractors in place clusters"] = int(
        sum(((pred == lab) & (place == "")).sum() for lab in {int(x) for x in pred[place != ""] if x >= 0})
    )
    return out


def average_precision(relevant: np.ndarray, total: int) -> float:
    if total == 0:
        return 0.0
    hits = np.cumsum(relevant)
    precision = hits / np.arange(1, len(relevant) + 1)
    return float((precision * relevant).sum() / min(total, len(relevant)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--depth", type=int, default=100)
    args = ap.parse_args()

    from lookalike.cluster import cluster_index
    from lookalike.index import RERANK_KEYPOINTS, Index
    from lookalike.verify import MatchConf

    root = make_mix()
    path = CACHE / "index-places-mix"
    index = Index.build(root, path, labels="folders", progress=False)
    n = len(index)
    place = place_of(index.labels)
    distractors = int((place == "").sum())
    print(f"{n} images: {n - distractors} place photos, {distractors} distractors")

    # --- cost: features -----------------------------------------------------------------------------------------
    cache = index.features
    cache.clear()
    started = time.perf_counter()
    cache.ensure(workers=args.workers)
    feat_s = time.perf_counter() - started
    bytes_per = cache.disk_bytes() / n
    kps = np.array([len(cache.get(i)) for i in range(n)])
    print(f"features: {n / feat_s:.2f} images/s, {bytes_per / 1024:.0f} KiB/image")

    # --- clustering -------------------------------------------------------------------------------------------
    rows = []
    verified_time = None
    for label, verify in (("cosine (default)", None), ("--verify", MatchConf())):
        started = time.perf_counter()
        result = cluster_index(index, match=verify, workers=args.workers, save=False)
        seconds = time.perf_counter() - started
        if verify is not None:
            verified_time = seconds
        s = cluster_scores(result.labels, place)
        rows.append(
            [
                label,
                s["ari"],
                s["ari_places"],
                *(s[p] for p in PLACES),
                s["distractors in place clusters"],
                f"{seconds:.1f}",
            ]
        )
        print(label, s, [note for note in result.notes if "verification" in note])
    cluster_table = markdown_table(
        ["clustering", "ARI (distractors as singletons)", "ARI (place photos only)", *PLACES,
         "distractors in place clusters", "seconds"],
        rows,
    )  # fmt: skip

    # --- pairs --------------------------------------------------------------------------------------------------
    started = time.perf_counter()
    pairs = index.pairs(10, verify=MatchConf(), workers=args.workers)  # features cached: this times verification
    pair_s = time.perf_counter() - started
    same = np.array([place[p.a] != "" and place[p.a] == place[p.b] for p in pairs])
    ok = np.array([p.verdict.verified for p in pairs])
    positives = sum(int(c * (c - 1) // 2) for c in (int((place == p).sum()) for p in PLACES))
    tp = int((same & ok).sum())
    prec_v = tp / max(1, int(ok.sum()))
    recall_v = tp / positives
    x = index.vectors
    sims = x @ x.T
    iu = np.triu_indices(n, 1)
    s_all = sims[iu]
    same_all = (place[iu[0]] != "") & (place[iu[0]] == place[iu[1]])
    order = np.argsort(-s_all, kind="stable")
    hits = np.cumsum(same_all[order])
    cut = int(np.searchsorted(hits, tp)) + 1  # fewest cosine-ranked pairs holding as many same-place pairs
    prec_c = tp / cut
    cand_same = int(same.sum())
    pairs_text = markdown_table(
        ["pairs", "pairs kept", "same place", "precision", "recall (of all same-place pairs)"],
        [
            [
                "kNN candidates (num_matched 10)",
                len(pairs),
                cand_same,
                f"{cand_same / len(pairs):.3f}",
                f"{cand_same / positives:.3f}",
            ],
            ["verified (≥ 15 inliers)", int(ok.sum()), tp, f"{prec_v:.3f}", f"{recall_v:.3f}"],
            ["cosine-ranked, all pairs, at equal recall", cut, tp, f"{prec_c:.3f}", f"{recall_v:.3f}"],
        ],
    )

    # --- search ------------------------------------------------------------------------------------------------
    queries = np.flatnonzero(place != "")
    names = index.names

    def scores_of(results: list) -> tuple[float, float]:
        p5, aps = [], []
        for qi, r in zip(queries, results, strict=True):
            rel = np.array([place[m.id] == place[qi] for m in r.matches], dtype=float)
            total = int((place == place[qi]).sum()) - 1
            p5.append(rel[:5].mean())
            aps.append(average_precision(rel, total))
        return float(np.mean(p5)), float(np.mean(aps))

    paths = [str(index.root / names[q]) for q in queries]
    base = index.search_many(paths, args.depth)
    plain = []
    for p in paths:
        t = time.perf_counter()
        index.search_many([p], args.depth)
        plain.append(time.perf_counter() - t)
    search_s = float(np.median(plain))  # decode + embed + search per query: the reference speed
    started = time.perf_counter()
    cache.pack(RERANK_KEYPOINTS)
    pack_s = time.perf_counter() - started  # what `lookalike features` adds to build re-ranking's store
    a = np.random.default_rng(0).random((1024, 128), dtype=np.float32)
    started = time.perf_counter()
    for _ in range(10):
        a @ a.T
    matmul_ms = (time.perf_counter() - started) / 10 * 1000  # how fast this machine multiplies right now
    p5_c, map_c = scores_of(base)
    search_rows = [["cosine", f"{p5_c:.3f}", f"{map_c:.3f}", "–", "–", "–"]]

    def pair_by_pair(query: object, matches: list, conf: MatchConf) -> list:
        """Re-ranking as it was first built: each candidate's features file read (LRU of 256 cleared per query, as
        a server that has not seen these images has none), then verified pair by pair on the same 2 threads."""
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits

        from lookalike.verify import verify

        cache._loaded.clear()
        dq = query.rootsift(conf.keypoints)  # type: ignore[attr-defined]
        ids = [m.id for m in matches]
        chunks = [ids[s : s + 50] for s in range(0, len(ids), 50)]
        with threadpool_limits(1), ThreadPoolExecutor(2) as pool:
            verdicts = [
                v
                for part in pool.map(lambda ch: [verify(query, cache.get(i), conf, da=dq) for i in ch], chunks)
                for v in part
            ]  # type: ignore[arg-type]  # noqa: E501
        for m, v in zip(matches, verdicts, strict=True):
            m.inliers = None if v.status == "unknown" else v.inliers
        return matches

    kinds = [(kp, "pack") for kp in sorted({512, RERANK_KEYPOINTS, 1024})] + [(RERANK_KEYPOINTS, "before")]
    for kp, how in kinds:
        conf = MatchConf(keypoints=kp)
        ranked = []
        latencies = []
        for q, r in zip(queries, base, strict=True):
            feats = cache.get(int(q))
            copies = [m.__class__(**m.to_dict()) for m in r.matches]
            t = time.perf_counter()
            run = index.rerank if how == "pack" else pair_by_pair
            ranked_matches = run(feats, copies, conf)
            latencies.append(time.perf_counter() - t)
            ranked.append(type(r)(r.query, ranked_matches))
        lat = np.array(latencies)
        timing = [f"{np.median(lat):.3f} / {np.quantile(lat, 0.9):.3f}", f"{np.median(lat) / search_s:.2f}×"]
        verified = sum(1 for rr in ranked for m in rr.matches if m.inliers is not None and m.inliers >= 15)
        if how == "before":
            label = f"(the first build: one file per candidate, pair by pair; {kp} keypoints)"
            search_rows.append([label, "–", "–", *timing, verified])
            print(label, np.median(lat), verified)
            continue
        p5_r, map_r = scores_of(ranked)
        label = f"--rerank, depth {args.depth}, {kp} keypoints" + (" (default)" if kp == RERANK_KEYPOINTS else "")
        search_rows.append([label, f"{p5_r:.3f}", f"{map_r:.3f}", *timing, verified])
        print(label, p5_r, map_r, np.median(lat), verified)
    search_table = markdown_table(
        [
            "search",
            "P@5",
            "mAP@100",
            "added latency s/query, median / p90",
            "÷ plain search",
            "matches with ≥ 15 inliers",
        ],
        search_rows,
    )
    search_table += (
        f"\n\nIn the same run: a plain search (decode, embed, search) took {search_s:.3f} s per query (median), "
        f"one 1024×128 by 128×1024 float32 product {matmul_ms:.1f} ms (the matching step of one 1,024-keypoint pair; "
        f"a measure of how loaded the machine was), and packing the 512 strongest keypoints of all {n} images into "
        f"re-ranking's memory-mapped store {pack_s:.1f} s (done by `lookalike features`, or by the first re-ranked "
        "search)."
    )

    # --- cost: verification -----------------------------------------------------------------------------------
    pairs_per_s = len(pairs) / pair_s
    per_image = len(pairs) / n
    proj_feat = PROJECT / (n / feat_s)
    proj_pairs = PROJECT * per_image / pairs_per_s
    cost_table = markdown_table(
        ["cost", "value"],
        [
            ["feature extraction", f"{n / feat_s:.2f} images/s ({args.workers} threads)"],
            ["keypoints per image, median (min–max)", f"{int(np.median(kps))} ({kps.min()}–{kps.max()})"],
            ["feature bytes per image on disk", f"{bytes_per / 1024:.0f} KiB"],
            ["verification", f"{pairs_per_s:.1f} pairs/s ({args.workers} threads, all keypoints)"],
            ["candidate pairs per image (num_matched 10, unique)", f"{per_image:.1f}"],
            [
                f"projected for {PROJECT:,} photos",
                f"features {proj_feat / 3600:.1f} h + verification {proj_pairs / 3600:.1f} h; "
                f"{PROJECT * bytes_per / 1024**3:.1f} GiB of features",
            ],
            ["cluster --verify on this collection (features cached)", f"{verified_time:.1f} s"],
        ],
    )

    body = f"""## Places: geometric verification (local features + MAGSAC++)

The three real places of `places/` (berlin 3, lund 29, sceaux 11 photos) among {distractors} distractors (80 photos
of each room type, the 39 interiors, 10 of each flower species): {n} images. Default settings throughout (index:
EfficientNet-Lite0 GeM; features: 2,048 RootSIFT keypoints at 1,024 px; pairs verified by a fundamental matrix,
≥ 15 inliers).

**Clustering** (default graph method; the first ARI counts each distractor as its own class and noise as
singletons, the second looks at the place photos only):

{cluster_table}

**Pairs** (same-place pairs are the positives; {positives} exist):

{pairs_text}

**Search** ({len(queries)} place photos as queries against all other images; relevant = same place; features
cached; the added latency is matching and verifying the top {args.depth}):

{search_table}

**Cost**:

{cost_table}
"""
    settings = {
        **index_settings(index.store.meta),
        "data": f"places + {distractors} distractors",
        "workers": args.workers,
        "k": 10,
        "rerank depth": args.depth,
    }
    write_section("places", body, settings=settings)
    print(body)


if __name__ == "__main__":
    main()
