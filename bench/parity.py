"""Old code and new code side by side: the same photos indexed, classified and searched by two checkouts.

A restructuring must not change what users get. Each checkout runs in its own process (``PYTHONPATH`` set to it)
on the same room photos of ``../shared/data``: the vectors it writes (compared byte for byte), 5-fold accuracy of
the kNN / linear / MLP heads on them, lookalike's search overhead over raw FAISS (``Index.search`` with a vector
against ``IndexFlatIP.search``, interleaved, median of per-query times), and indexing throughput. The two
checkouts alternate round by round, so a change of CPU speed hits both alike.

Run: ``python -m bench.parity --old /path/to/old/checkout [--images 600] [--rounds 2]`` (the old checkout is a
``git worktree`` of the commit before the change).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import ROOT, SHARED, markdown_table, write_section


def _photos(n: int) -> list[Path]:
    """The first ``n`` room photos in a fixed order, spread over the classes (every k-th of the sorted list)."""
    files = sorted(p for p in (SHARED / "rooms").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    step = max(1, len(files) // n)
    return files[::step][:n]


def worker(out: Path, images: int, folder: Path, code: Path) -> None:
    """One checkout's figures, with ``code``'s lookalike first on the path (checked)."""
    import faiss

    sys.path.insert(0, str(code))
    import lookalike

    if not Path(lookalike.__file__).resolve().is_relative_to(code.resolve()):
        raise SystemExit(f"lookalike came from {lookalike.__file__}, not {code}")
    from lookalike import Index
    from lookalike.evaluate import cross_validate

    src = folder / "photos"
    if not src.exists():
        for p in _photos(images):
            dest = src / p.relative_to(SHARED / "rooms")
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(p, dest) if p.stat().st_dev == folder.stat().st_dev else dest.write_bytes(p.read_bytes())
    t = time.perf_counter()
    # fp32 in both: the default precision itself changed in between (int8 only on CPUs with VNNI), which is not what
    # this compares
    index = Index.build(src, folder / "idx", labels="folders", precision="fp32", progress=False)
    seconds = time.perf_counter() - t
    vectors = np.asarray(index.vectors, dtype=np.float32)
    np.save(out.with_suffix(".npy"), vectors)
    labels = np.array(index.labels, dtype=object)
    acc = {m: cross_validate(vectors, labels, m, folds=5) for m in ("knn", "linear", "mlp")}
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    ours, raw = [], []
    index.search(vectors[0], k=10)  # warm both paths
    flat.search(vectors[:1], 10)
    for i in range(min(300, len(vectors))):
        q = vectors[i]
        t = time.perf_counter()
        index.search(q, k=10)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        flat.search(q[None], 10)
        raw.append(time.perf_counter() - t)
    big_ours, big_raw = _vector_search_overhead()
    out.write_text(
        json.dumps(
            {
                "names": index.names,
                "seconds": seconds,
                "images": len(index),
                "accuracy": {m: _accuracy(r) for m, r in acc.items()},
                "search_ms": float(np.median(ours) * 1e3),
                "faiss_ms": float(np.median(raw) * 1e3),
                "big_search_ms": big_ours,
                "big_faiss_ms": big_raw,
            }
        )
    )


def _vector_search_overhead(n: int = 100_000, dim: int = 1280, queries: int = 200) -> tuple[float, float]:
    """``VectorSearch`` against the ``IndexFlatIP`` it wraps at 100,000 clustered vectors (BENCHMARKS "Large
    indexes" measures the same at 10k–1M): median ms per single-query top-10, interleaved."""
    import faiss

    from lookalike.search import VectorSearch

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((400, dim)).astype(np.float32)
    x = centres[rng.integers(0, 400, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    vs = VectorSearch(x)
    flat = faiss.IndexFlatIP(dim)
    flat.add(x)
    ours, raw = [], []
    for i in range(queries):
        q = x[i * 37 % n][None]
        t = time.perf_counter()
        vs.search(q, 10)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        flat.search(q, 10)
        raw.append(time.perf_counter() - t)
    return float(np.median(ours) * 1e3), float(np.median(raw) * 1e3)


def _accuracy(result: object) -> float:
    for key in ("accuracy", "acc"):
        value = getattr(result, key, None) if not isinstance(result, dict) else result.get(key)
        if value is not None:
            return float(np.mean(value)) if not isinstance(value, float) else value
    raise TypeError(f"no accuracy in {result!r}")


def _run(code: Path, images: int, work: Path, tag: str) -> dict:
    out = work / f"{tag}.json"
    folder = work / tag
    folder.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "bench.parity", "--worker", str(out), "--images", str(images), "--folder", str(folder)]
    subprocess.run([*cmd, "--code", str(code)], check=True, cwd=ROOT)
    data = json.loads(out.read_text())
    data["vectors"] = np.load(out.with_suffix(".npy"))
    for p in folder.glob("idx*"):
        subprocess.run(["rm", "-rf", str(p)], check=True)
    return data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", type=Path, help="the old checkout (a git worktree of the commit before the change)")
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--code", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.images, args.folder, args.code)
        return
    old_rev = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=args.old, text=True).strip()
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for r in range(args.rounds):
            for tag, code in (("old", args.old), ("new", ROOT)) if r % 2 == 0 else (("new", ROOT), ("old", args.old)):
                runs[tag].append(_run(code, args.images, work, f"{tag}{r}"))
                print(tag, r, {k: v for k, v in runs[tag][-1].items() if k not in ("vectors", "names")}, flush=True)
    write_section(
        "parity", report(runs, old_rev, args), {"data": f"rooms, {args.images} photos", "rounds": args.rounds}
    )


def report(runs: dict[str, list[dict]], old_rev: str, args: argparse.Namespace) -> str:
    old, new = runs["old"][0], runs["new"][0]
    same_names = old["names"] == new["names"]
    equal = (
        same_names and old["vectors"].shape == new["vectors"].shape and np.array_equal(old["vectors"], new["vectors"])
    )
    max_diff = float(np.abs(old["vectors"] - new["vectors"]).max()) if same_names else float("nan")

    def med(tag: str, key: str) -> float:
        return float(np.median([r[key] for r in runs[tag]]))

    rows = [
        ["kNN / linear / MLP accuracy, 5-fold (%)"]
        + [
            " / ".join(f"{100 * runs[t][0]['accuracy'][m]:.2f}" for m in ("knn", "linear", "mlp"))
            for t in ("old", "new")
        ],
        [
            "`Index.search` top-10 with a vector (ms, median)",
            f"{med('old', 'search_ms'):.3f}",
            f"{med('new', 'search_ms'):.3f}",
        ],
        ["raw FAISS IndexFlatIP (ms, median)", f"{med('old', 'faiss_ms'):.3f}", f"{med('new', 'faiss_ms'):.3f}"],
        [
            "`Index.search` ÷ raw FAISS (small index: the fixed cost of a call)",
            f"{med('old', 'search_ms') / med('old', 'faiss_ms'):.2f}×",
            f"{med('new', 'search_ms') / med('new', 'faiss_ms'):.2f}×",
        ],
        [
            "`VectorSearch` top-10 at 100,000 vectors ÷ raw FAISS",
            f"{med('old', 'big_search_ms') / med('old', 'big_faiss_ms'):.2f}×",
            f"{med('new', 'big_search_ms') / med('new', 'big_faiss_ms'):.2f}×",
        ],
        [
            "indexing (photos/s, median of rounds)",
            f"{old['images'] / med('old', 'seconds'):.1f}",
            f"{new['images'] / med('new', 'seconds'):.1f}",
        ],
        ["indexing seconds, each round"] + [" / ".join(f"{r['seconds']:.1f}" for r in runs[t]) for t in ("old", "new")],
    ]
    verdict = (
        "byte-identical" if equal else f"not identical (largest difference {max_diff:.2e}; same names: {same_names})"
    )
    return "\n".join(
        [
            f"The same {old['images']} room photos indexed, classified and searched by the code before the "
            f"restructuring of the facade and the faces (commit {old_rev}) and after it (this commit), in separate "
            f"processes, alternating over {args.rounds} rounds, both at fp32 (the default precision changed between them: "
            f"int8 only on CPUs with VNNI). The vectors the two wrote are **{verdict}**.",
            "",
            markdown_table(["figure", f"before ({old_rev})", "after"], rows),
        ]
    )


if __name__ == "__main__":
    main()
