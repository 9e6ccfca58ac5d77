"""How good are classification and retrieval: metrics on plain arrays, and :func:`evaluate` of an index on a test set.

The metric functions take labels and rankings as arrays so other parts (training, benchmarks) can reuse them:

- classification: accuracy, macro-F1, per-class precision/recall/F1 (scikit-learn), top-k accuracy, and the
  expected calibration error (ECE: mean |confidence - accuracy| over confidence bins, weighted by bin size);
- retrieval, for a query with label q and the labels of its ranked neighbours: ``recall_at_k`` (R@K, the share of
  queries with at least one same-class image among the first K, as in the place-recognition papers),
  ``precision_at_k`` (share of same-class images among the first K), and ``map_at_r`` (MAP@R, Musgrave et al. 2020:
  with R the number of same-class images in the database, the average precision over the first R results, where
  misses count as 0; it rewards ranking *all* of the class first, not only the top few).

:func:`evaluate` labels a test folder from its sub-folders (``TEST/Kitchen/a.jpg`` → Kitchen), embeds it with the
index's describer, classifies it with the index's head and ranks the index for each test image. Test classes the
index does not know cannot be classified: they are left out, named in ``unknown_classes``, and the rest evaluated
(if nothing is left, it is an error). Test images whose content is also in the index are excluded from their own
rankings (counted in ``overlap``), so a test set that leaked into the index does not score a perfect R@1.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.errors import LookalikeError

if TYPE_CHECKING:
    from lookalike.index import Index

KS = (1, 5, 10)

# --- metrics on arrays ---------------------------------------------------------------------------------------------


def expected_calibration_error(proba: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """ECE of the top-class confidence: Σ_bins (n_bin / n) · |accuracy_bin − mean confidence_bin|.

    ``proba``: (n, classes) probabilities; ``y_true``: (n,) class indices into proba's columns.
    """
    proba = np.asarray(proba, dtype=np.float64)
    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        return 0.0
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def top_k_accuracy(proba: np.ndarray, y_true: np.ndarray, k: int) -> float:
    """Share of samples whose true class is among the k most probable (k is capped at the number of classes)."""
    proba = np.asarray(proba)
    k = min(k, proba.shape[1])
    top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return float(np.mean((top == np.asarray(y_true)[:, None]).any(axis=1))) if len(proba) else 0.0


def _relevance(query_labels: Sequence[Any], retrieved_labels: np.ndarray) -> np.ndarray:
    retrieved = np.asarray(retrieved_labels, dtype=object)
    q = np.asarray(query_labels, dtype=object).reshape(-1, 1)
    return retrieved == q


def precision_at_k(query_labels: Sequence[Any], retrieved_labels: np.ndarray, k: int) -> float:
    """Mean over queries of (same-class results among the first k) / k; ``retrieved_labels`` is (n, ≥k), best first.

    A missing result (fewer than k in the database) is given as ``None`` and counts as a miss.
    """
    rel = _relevance(query_labels, retrieved_labels)[:, :k]
    return float(rel.sum(axis=1).mean() / k) if len(rel) else 0.0


def recall_at_k(query_labels: Sequence[Any], retrieved_labels: np.ndarray, k: int) -> float:
    """R@K: share of queries with at least one same-class result among the first k."""
    rel = _relevance(query_labels, retrieved_labels)[:, :k]
    return float(rel.any(axis=1).mean()) if len(rel) else 0.0


def map_at_r(query_labels: Sequence[Any], retrieved_labels: np.ndarray, r: Sequence[int] | np.ndarray) -> float:
    """MAP@R: mean over queries of (1/R) Σ_{i≤R} P@i · rel(i), with R = ``r[q]`` same-class items in the database.

    ``retrieved_labels`` must hold at least max(r) results per query (pad with None). Queries with R = 0 are skipped.
    """
    rel = _relevance(query_labels, retrieved_labels)
    r = np.asarray(r, dtype=np.int64)
    scores = []
    for row, big_r in zip(rel, r, strict=True):
        if big_r <= 0:
            continue
        hits = row[:big_r].astype(np.float64)
        if len(hits) < big_r:
            hits = np.concatenate([hits, np.zeros(big_r - len(hits))])
        prec = np.cumsum(hits) / np.arange(1, big_r + 1)
        scores.append(float((prec * hits).sum() / big_r))
    return float(np.mean(scores)) if scores else 0.0


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 (over the classes that occur in truth or prediction), per-class P/R/F1, confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    y_true, y_pred = list(y_true), list(y_pred)
    labels = [c for c in classes if c in set(y_true) | set(y_pred)]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(labels)
        },
        "confusion": {
            "labels": list(classes),
            "matrix": confusion_matrix(y_true, y_pred, labels=list(classes)).tolist(),
        },
    }


def rank_database(
    queries: np.ndarray,
    database: np.ndarray,
    depth: int,
    exclude: Sequence[Sequence[int]] | None = None,
    chunk: int = 256,
) -> np.ndarray:
    """Ids of the ``depth`` most similar database vectors per query (exact inner product), best first; -1 pads."""
    n, m = len(queries), len(database)
    depth = max(1, depth)
    out = np.full((n, depth), -1, dtype=np.int64)
    d = min(depth, m)
    for start in range(0, n, chunk):
        sims = queries[start : start + chunk] @ database.T
        if exclude is not None:
            for j in range(len(sims)):
                ex = list(exclude[start + j])
                if ex:
                    sims[j, ex] = -np.inf
        top = np.argpartition(-sims, d - 1, axis=1)[:, :d] if d < m else np.tile(np.arange(m), (len(sims), 1))
        order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1, kind="stable")
        ranked = np.take_along_axis(top, order, 1)
        if exclude is not None:  # an excluded id sorts last with -inf; drop it
            for j in range(len(ranked)):
                ex = set(exclude[start + j])
                if ex:
                    keep = [i for i in ranked[j] if i not in ex]
                    ranked[j, : len(keep)] = keep
                    ranked[j, len(keep) :] = -1
        out[start : start + len(ranked), :d] = ranked
    return out


def retrieval_metrics(
    query_vectors: np.ndarray,
    query_labels: Sequence[Any],
    db_vectors: np.ndarray,
    db_labels: Sequence[Any],
    ks: Sequence[int] = KS,
    exclude: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """R@K, P@K and MAP@R of queries ranked against a labelled database (unlabelled database rows never match)."""
    db = np.asarray([lab if lab is not None else None for lab in db_labels], dtype=object)
    counts = Counter(lab for lab in db_labels if lab is not None)
    ex = exclude or [[] for _ in range(len(query_vectors))]
    r = np.array(
        [counts.get(q, 0) - sum(1 for i in ex[j] if db[i] == q) for j, q in enumerate(query_labels)], dtype=np.int64
    )
    depth = int(max(max(ks), r.max() if len(r) else 0))
    ids = rank_database(np.asarray(query_vectors, np.float32), np.asarray(db_vectors, np.float32), depth, exclude)
    retrieved = np.where(ids >= 0, db[np.clip(ids, 0, None)], None)
    return {
        "recall_at": {str(k): recall_at_k(query_labels, retrieved, k) for k in ks},
        "precision_at": {str(k): precision_at_k(query_labels, retrieved, k) for k in ks},
        "map_at_r": map_at_r(query_labels, retrieved, r),
    }


# --- evaluating an index on a test folder ---------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Metrics (``metrics``, the JSON of `lookalike evaluate`) and what the pictures need."""

    metrics: dict[str, Any]
    paths: list[Path] = field(default_factory=list)
    vectors: np.ndarray | None = None
    y_true: list[str] = field(default_factory=list)
    y_pred: list[str] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)


def labelled_images(folder: str | os.PathLike[str]) -> list[tuple[Path, str]]:
    """(path, class) for every image in a sub-folder of ``folder``; the class is the image's parent folder name."""
    from lookalike.images import find_images

    root = Path(folder)
    if not root.is_dir():
        raise LookalikeError(f"test folder not found: {folder}")
    out = [(p, p.parent.name) for p in find_images(root) if p.parent.resolve() != root.resolve()]
    if not out:
        raise LookalikeError(
            f"no labelled images in {folder}: put test images in one sub-folder per class (e.g. {folder}/Kitchen/a.jpg)"
        )
    return out


def embed_files(index: Index, paths: Sequence[Path]) -> tuple[np.ndarray, list[int], list[str], list[tuple[str, str]]]:
    """Vectors of files described as the index was: (vectors, positions of the described files, hashes, errors)."""
    vecs, pos, hashes, errors = [], [], [], []
    where = {p: i for i, p in enumerate(paths)}
    for batch in index.describer.describe_files(list(paths)):
        for item in batch.items:
            if item.error:
                errors.append((str(item.path), item.error))
        if batch.described:
            vecs.append(batch.vectors)
            pos.extend(where[item.path] for item in batch.described)
            hashes.extend(item.hash or "" for item in batch.described)
    vectors = np.concatenate(vecs) if vecs else np.zeros((0, index.store.dim), np.float32)
    return vectors, pos, hashes, errors


def run_evaluation(
    index: Index, test_dir: str | os.PathLike[str], method: str | None = None, *, k: int | None = None
) -> Evaluation:
    """Classify and rank a labelled test folder against the index; see the module docstring."""
    from lookalike.classify import head_for, to_predictions

    head = head_for(index, method, k=k)
    classes = [str(c) for c in head.classes_]
    items = labelled_images(test_dir)
    unknown = Counter(lab for _, lab in items if lab not in classes)
    items = [(p, lab) for p, lab in items if lab in classes]
    if not items:
        raise LookalikeError(
            f"none of the test classes ({', '.join(sorted(unknown))}) is a class of the index "
            f"({', '.join(classes)}); name the test folders like the index's"
        )
    paths = [p for p, _ in items]
    vectors, pos, hashes, errors = embed_files(index, paths)
    if len(pos) == 0:
        raise LookalikeError(f"none of the {len(paths)} test images could be read (first: {errors[0][1]})")
    paths = [paths[i] for i in pos]
    y_true = [items[i][1] for i in pos]

    by_hash: dict[str, list[int]] = {}
    for i, h in enumerate(index.store.column("hash")):
        by_hash.setdefault(h, []).append(i)
    exclude = [by_hash.get(h, []) for h in hashes]

    from lookalike.classify import predict_proba

    proba = predict_proba(head, vectors, exclude)
    preds = to_predictions(head, proba)
    y_pred = [p.label for p in preds]
    lookup = {c: i for i, c in enumerate(classes)}
    y_idx = np.array([lookup[c] for c in y_true])

    metrics: dict[str, Any] = {"n": len(y_true), "method": head.method, "classes": classes}
    cls = classification_metrics(y_true, y_pred, classes)
    metrics.update({k2: cls[k2] for k2 in ("accuracy", "macro_f1", "per_class")})
    metrics.update(retrieval_metrics(vectors, y_true, index.vectors, index.labels, KS, exclude))
    metrics["top_k_accuracy"] = {str(kk): top_k_accuracy(proba, y_idx, kk) for kk in KS}
    metrics["ece"] = expected_calibration_error(proba, y_idx)
    metrics["confusion"] = cls["confusion"]
    metrics["unknown_classes"] = dict(sorted(unknown.items()))
    metrics["unreadable"] = [{"path": p, "reason": r} for p, r in errors]
    metrics["overlap"] = sum(1 for e in exclude if e)
    return Evaluation(metrics, paths, vectors, y_true, y_pred, [float(p.probability) for p in preds])


def evaluate(
    index: Index, test_dir: str | os.PathLike[str], method: str | None = None, *, k: int | None = None
) -> dict[str, Any]:
    """One dict: accuracy, macro_f1, per_class, recall_at, precision_at, map_at_r, top_k_accuracy, ece, confusion, n…"""
    return run_evaluation(index, test_dir, method, k=k).metrics


# --- cross-validation (the benchmark) ---------------------------------------------------------------------------------


def cross_validate(
    vectors: np.ndarray, labels: Sequence[str], method: str, *, folds: int = 5, k: int = 10, seed: int = 0
) -> dict[str, Any]:
    """Stratified k-fold: fit on k-1 folds, predict the held-out fold; accuracy, macro-F1, ECE and times per image.

    Returns means and standard deviations over folds, and the seconds to fit (per fold) and to predict (per image).
    """
    import time

    from sklearn.model_selection import StratifiedKFold

    from lookalike.classify import make_head

    y = np.asarray(labels, dtype=object)
    X = np.asarray(vectors, np.float32)  # noqa: N806
    rows: list[dict[str, float]] = []
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        head = make_head(method, k=k, seed=seed)
        t0 = time.perf_counter()
        head.fit(X[tr], y[tr])
        t1 = time.perf_counter()
        proba = head.predict_proba(X[te])
        t2 = time.perf_counter()
        lookup = {c: i for i, c in enumerate(head.classes_)}
        yi = np.array([lookup.get(c, -1) for c in y[te]])
        pred = head.classes_[proba.argmax(1)]
        m = classification_metrics(list(y[te]), list(pred), [str(c) for c in head.classes_])
        rows.append(
            {
                "accuracy": m["accuracy"],
                "macro_f1": m["macro_f1"],
                "ece": expected_calibration_error(proba, yi),
                "fit_seconds": t1 - t0,
                "predict_ms_per_image": 1000 * (t2 - t1) / len(te),
            }
        )
    out: dict[str, Any] = {"method": method, "folds": folds, "n": len(y)}
    for key in rows[0]:
        vals = np.array([r[key] for r in rows])
        out[key] = float(vals.mean())
        out[key + "_std"] = float(vals.std())
    return out


def label_suspects(
    vectors: np.ndarray, labels: Sequence[str], *, below: float = 0.1, folds: int = 5, seed: int = 0
) -> list[dict[str, Any]]:
    """Images whose folder label the rest of the data contradicts: the out-of-fold probability of their own label,
    from a logistic-regression probe fitted on the other folds, is below ``below``. Most confident first.

    Why: folder labels are made by hand and some are wrong. Judged by a model that never saw it, a mislabelled image
    looks like a confident mistake, so these are the first images to check (on the rooms photos, 7 of the 11 held-out
    images flagged at 0.1 had a wrong folder label by eye, and 3 more showed two room types; BENCHMARKS.md). Training
    can leave them out (``lookalike train --drop-suspects``). Classes with fewer images than ``folds`` are never
    flagged: there is nothing to judge them against.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from lookalike.aggregate import l2_normalize

    if not 0.0 < below < 1.0:
        raise LookalikeError(f"the suspect threshold must be between 0 and 1, got {below}")
    y = np.asarray(labels, dtype=object)
    counts = Counter(y.tolist())
    judged = np.array([counts[c] >= folds for c in y], bool)
    classes = sorted(c for c, n in counts.items() if n >= folds)
    if len(classes) < 2:
        return []
    X = l2_normalize(np.asarray(vectors, np.float32))[judged]  # noqa: N806
    yj = np.array([classes.index(c) for c in y[judged]])
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)  # every class in every fold: columns = classes
    proba = cross_val_predict(LogisticRegression(C=1.0, max_iter=3000), X, yj, cv=cv, method="predict_proba")
    own = proba[np.arange(len(yj)), yj]
    rows = np.flatnonzero(judged)
    out = [
        {
            "row": int(rows[i]),
            "label": classes[yj[i]],
            "predicted": classes[int(proba[i].argmax())],
            "p_label": float(own[i]),
        }
        for i in np.flatnonzero(own < below)
    ]
    return sorted(out, key=lambda r: r["p_label"])


def index_suspects(index: Index, *, below: float = 0.1) -> list[dict[str, Any]]:
    """:func:`label_suspects` of the index's labelled images, each with its file path (most confident first)."""
    from lookalike.classify import require_classes

    require_classes(index)
    rows = [i for i, lab in enumerate(index.labels) if lab is not None]
    found = label_suspects(index.vectors[rows], [index.labels[i] for i in rows], below=below)
    paths = index.paths
    return [{"path": str(paths[rows[s.pop("row")]]), **s} for s in found]


# --- the report folder ----------------------------------------------------------------------------------------------


def write_report(index: Index, evaluation: Evaluation, out_dir: str | os.PathLike[str], *, per_class: int = 12) -> Path:
    """``out_dir/index.html`` with the metrics, a confusion matrix, a t-SNE of index and test vectors, and a grid of
    each class's mistakes (the most confident first, as they are the most telling); returns the HTML path."""
    import html
    import json

    from lookalike.plots import confusion_png, mistakes_png, tsne_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = evaluation.metrics
    confusion_png(m["confusion"]["labels"], m["confusion"]["matrix"], out / "confusion.png")
    tsne_png(
        index.vectors,
        index.labels,
        out / "tsne.png",
        extra_vectors=evaluation.vectors,
        extra_labels=evaluation.y_true,
        title="t-SNE: index (dots) and test images (crosses)",
    )
    (out / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")
    grids: list[tuple[str, str, int]] = []
    for c in m["classes"]:
        wrong = [
            (p, yp, conf)
            for p, yt, yp, conf in zip(
                evaluation.paths, evaluation.y_true, evaluation.y_pred, evaluation.confidence, strict=True
            )
            if yt == c and yp != c
        ]
        if wrong:
            wrong.sort(key=lambda t: -t[2])
            name = f"mistakes-{''.join(ch if ch.isalnum() else '_' for ch in c)}.png"
            mistakes_png(c, wrong[:per_class], out / name)
            grids.append((c, name, len(wrong)))

    def pct(x: float) -> str:
        return f"{100 * x:.1f} %"

    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{pct(v['precision'])}</td><td>{pct(v['recall'])}</td>"
        f"<td>{pct(v['f1'])}</td><td>{v['support']}</td></tr>"
        for c, v in m["per_class"].items()
    )
    ks = list(m["recall_at"])
    retrieval = "".join(
        f"<tr><td>{k}</td><td>{pct(m['recall_at'][k])}</td><td>{pct(m['precision_at'][k])}</td>"
        f"<td>{pct(m['top_k_accuracy'][k])}</td></tr>"
        for k in ks
    )
    notes = []
    if m["unknown_classes"]:
        notes.append(
            "Left out (classes the index does not know): "
            + ", ".join(f"{html.escape(c)} ({n})" for c, n in m["unknown_classes"].items())
        )
    if m["overlap"]:
        notes.append(f"{m['overlap']} test images are also in the index; they were excluded from their own rankings.")
    if m["unreadable"]:
        notes.append(f"{len(m['unreadable'])} test files could not be read.")
    mistakes = "".join(
        f"<h3>{html.escape(c)}: {n} misclassified</h3><img src='{name}' alt='mistakes of {html.escape(c)}'>"
        for c, name, n in grids
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lookalike evaluation</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:0.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:3px 10px;text-align:right}}
td:first-child{{text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>Evaluation of {html.escape(str(index.store.path))}</h1>
<p>{m["n"]} test images, method <b>{html.escape(m["method"])}</b>: accuracy <b>{pct(m["accuracy"])}</b>,
macro-F1 <b>{pct(m["macro_f1"])}</b>, MAP@R <b>{pct(m["map_at_r"])}</b>, ECE {m["ece"]:.3f}.</p>
{"".join(f"<p>{n}</p>" for n in notes)}
<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>test images</th></tr>
{rows}</table>
<h2>Retrieval against the index, and top-k class accuracy</h2>
<table><tr><th>k</th><th>R@k (a same-class image in the top k)</th><th>P@k</th><th>top-k class accuracy</th></tr>
{retrieval}</table>
<h2>Confusion matrix</h2><img src="confusion.png" alt="confusion matrix">
<h2>t-SNE</h2><img src="tsne.png" alt="t-SNE of the embeddings">
<h2>Mistakes</h2>{mistakes or "<p>None.</p>"}
<p><a href="metrics.json">metrics.json</a></p>
</body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path


def tsne_of_index(
    index: Index, out: str | os.PathLike[str], *, test_dir: str | os.PathLike[str] | None = None, max_points: int = 3000
) -> Path:
    """`lookalike plot tsne`: the index's vectors (and a labelled test folder's, if given) coloured by class."""
    if len(index) == 0:
        raise LookalikeError(f"the index at {index.store.path} is empty")
    extra_v = extra_l = None
    if test_dir is not None:
        items = labelled_images(test_dir)
        vectors, pos, _, _ = embed_files(index, [p for p, _ in items])
        extra_v, extra_l = vectors, [items[i][1] for i in pos]
    from lookalike.plots import tsne_png

    return tsne_png(
        index.vectors, index.labels, out, extra_vectors=extra_v, extra_labels=extra_l, max_points=max_points
    )
