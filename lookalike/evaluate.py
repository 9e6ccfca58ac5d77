"""How good are classification and retrieval on an index: :func:`evaluate` on a test set, cross-validation, label
suspects and the report pictures. The figures themselves (accuracy, macro-F1, ECE, R@K, P@K, MAP@R) are computed by
:mod:`lookalike.metrics`, the one implementation training and benchmarks use too.

:func:`evaluate` labels a test folder by the one label rule (the first folder under it: ``TEST/Kitchen/a.jpg`` →
Kitchen), embeds it with the
index's describer, classifies it with the index's head and ranks the index for each test image. Test classes the
index does not know cannot be classified: they are left out, named in ``unknown_classes``, and the rest evaluated
(if nothing is left, it is an error). Test images whose content is also in the index are excluded from their own
rankings (counted in ``overlap``), so a test set that leaked into the index does not score a perfect R@1.

The leak check (:mod:`lookalike.leaks`, on by default) also finds test images that are edited copies of indexed
ones (resized, recompressed, cropped, mirrored; near-copies): they are listed in ``leaks`` and every figure is given
again on the leak-free test images only (``leak_free``).
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
from lookalike.images import labelled_files
from lookalike.io import REPORT_MARKER, atomic_write, atomic_write_json, now_iso
from lookalike.metrics import KS, classification_metrics, expected_calibration_error, retrieval_metrics, top_k_accuracy

if TYPE_CHECKING:
    from lookalike.leaks import LeakReport
    from lookalike.view import IndexView


@dataclass
class Evaluation:
    """Metrics (``metrics``, the JSON of `lookalike evaluate`) and what the pictures need."""

    metrics: dict[str, Any]
    paths: list[Path] = field(default_factory=list)
    vectors: np.ndarray | None = None
    y_true: list[str] = field(default_factory=list)
    y_pred: list[str] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    leaks: LeakReport | None = None


class EvaluationMetrics(dict):
    """The dict `lookalike evaluate --json` prints, with the leak check's report as ``.leaks`` (None when skipped)
    and a notebook display."""

    leaks: LeakReport | None = None

    def _repr_html_(self) -> str:
        from lookalike.display import metrics_html

        return metrics_html(self)


def embed_files(
    index: IndexView, paths: Sequence[Path]
) -> tuple[np.ndarray, list[int], list[str], list[tuple[str, str]]]:
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
    vectors = np.concatenate(vecs) if vecs else np.zeros((0, index.dim), np.float32)
    return vectors, pos, hashes, errors


def run_evaluation(
    index: IndexView,
    test_dir: str | os.PathLike[str],
    method: str | None = None,
    *,
    k: int | None = None,
    leak_check: bool = True,
    orientations: bool = False,
    progress: bool = False,
) -> Evaluation:
    """Classify and rank a labelled test folder against the index; see the module docstring."""
    from lookalike.classify import head_for, to_predictions

    if leak_check:
        from lookalike.leaks import refuse_nested

        refuse_nested(test_dir, index.root)
    head = head_for(index, method, k=k)
    classes = [str(c) for c in head.classes_]
    items = labelled_files(test_dir, what="test images")
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
    for i, h in enumerate(index.hashes):
        by_hash.setdefault(h, []).append(i)
    exclude = [by_hash.get(h, []) for h in hashes]

    from lookalike.classify import predict_proba

    proba = predict_proba(head, vectors, exclude)
    preds = to_predictions(head, proba)
    y_pred = [p.label for p in preds]

    metrics: dict[str, Any] = {"n": len(y_true), "method": head.method, "classes": classes}
    metrics.update(_figures(index, classes, vectors, y_true, y_pred, proba, exclude))
    metrics["unknown_classes"] = dict(sorted(unknown.items()))
    metrics["unreadable"] = [{"path": p, "reason": r} for p, r in errors]
    metrics["overlap"] = sum(1 for e in exclude if e)
    report = None
    if leak_check:
        from lookalike.leaks import find_leaks

        report = find_leaks(
            index, vectors, paths, hashes, test_root=test_dir, orientations=orientations, progress=progress
        )
        leaked = {Path(test_dir) / p for p in report.leaked}
        keep = np.array([p not in leaked for p in paths], bool)
        metrics["leaks"] = {k2: v for k2, v in report.to_dict().items() if k2 not in ("test", "index")}
        clean: dict[str, Any] = {"n": int(keep.sum()), "excluded": int((~keep).sum())}
        if keep.any():
            rows = np.flatnonzero(keep)
            clean.update(
                _figures(
                    index, classes, vectors[rows], [y_true[i] for i in rows], [y_pred[i] for i in rows],
                    proba[rows], [exclude[i] for i in rows],
                )
            )  # fmt: skip
        metrics["leak_free"] = clean
    ev = Evaluation(metrics, paths, vectors, y_true, y_pred, [float(p.probability) for p in preds])
    ev.leaks = report
    return ev


def _figures(
    index: IndexView,
    classes: list[str],
    vectors: np.ndarray,
    y_true: list[str],
    y_pred: list[str],
    proba: np.ndarray,
    exclude: list[list[int]],
) -> dict[str, Any]:
    """Accuracy, macro-F1, per class, retrieval (R@K, P@K, MAP@R), top-k accuracy, ECE, confusion of these rows."""
    lookup = {c: i for i, c in enumerate(classes)}
    y_idx = np.array([lookup[c] for c in y_true])
    cls = classification_metrics(y_true, y_pred, classes)
    out: dict[str, Any] = {k2: cls[k2] for k2 in ("accuracy", "macro_f1", "per_class")}
    out.update(retrieval_metrics(vectors, y_true, index.vectors, index.labels, KS, exclude))
    out["top_k_accuracy"] = {str(kk): top_k_accuracy(proba, y_idx, kk) for kk in KS}
    out["ece"] = expected_calibration_error(proba, y_idx)
    out["confusion"] = cls["confusion"]
    return out


def evaluate(
    index: IndexView,
    test_dir: str | os.PathLike[str],
    method: str | None = None,
    *,
    k: int | None = None,
    leak_check: bool = True,
    orientations: bool = False,
) -> EvaluationMetrics:
    """One dict: accuracy, macro_f1, per_class, recall_at, precision_at, map_at_r, top_k_accuracy, ece, confusion,
    n…, with ``leaks`` and ``leak_free`` (the figures on the leak-free test images) unless ``leak_check`` is False;
    the leak report itself is ``.leaks``."""
    ev = run_evaluation(index, test_dir, method, k=k, leak_check=leak_check, orientations=orientations)
    out = EvaluationMetrics(ev.metrics)
    out.leaks = ev.leaks
    return out


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


def index_suspects(index: IndexView, *, below: float = 0.1) -> list[dict[str, Any]]:
    """:func:`label_suspects` of the index's labelled images, each with its file path (most confident first)."""
    from lookalike.classify import require_classes

    require_classes(index)
    rows = [i for i, lab in enumerate(index.labels) if lab is not None]
    found = label_suspects(index.vectors[rows], [index.labels[i] for i in rows], below=below)
    paths = index.paths
    return [{"path": str(paths[rows[s.pop("row")]]), **s} for s in found]


# --- the report folder ----------------------------------------------------------------------------------------------


def _mistake_grids(
    evaluation: Evaluation, classes: Sequence[str], out: Path, per_class: int
) -> list[tuple[str, str, int]]:
    """A picture of each class's mistakes, the most confident first: (class, file name, how many) per class with some."""
    from lookalike.plots import mistakes_png

    grids: list[tuple[str, str, int]] = []
    for c in classes:
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
    return grids


def write_report(
    index: IndexView, evaluation: Evaluation, out_dir: str | os.PathLike[str], *, per_class: int = 12
) -> Path:
    """``out_dir/index.html`` with the metrics, a confusion matrix, a t-SNE of index and test vectors, and a grid of
    each class's mistakes (the most confident first, as they are the most telling); returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the marker first: a report written next to the photos is never indexed as photos, even if this run stops
    atomic_write_json(out / REPORT_MARKER, {"format": 1, "written_by": "lookalike evaluate --report", "at": now_iso()})
    grids = _report_pictures(index, evaluation, out, per_class)
    atomic_write_json(out / "metrics.json", evaluation.metrics)
    path = out / "index.html"
    atomic_write(path, _report_page(index, evaluation.metrics, grids))
    return path


def _report_pictures(index: IndexView, evaluation: Evaluation, out: Path, per_class: int) -> list[tuple[str, str, int]]:
    """The report's PNGs: confusion matrix, t-SNE and each class's mistakes; returns (class, file, mistakes) of the
    grids written."""
    from lookalike.plots import confusion_png, tsne_png

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
    return _mistake_grids(evaluation, m["classes"], out, per_class)


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _report_notes(m: dict[str, Any]) -> list[str]:
    """The report's notes (HTML): classes left out, overlap, unreadable files, the leak check."""
    import html

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
    if "leaks" in m:
        clean, lk = m["leak_free"], m["leaks"]
        kinds = ", ".join(f"{n} {k}" for k, n in lk["by_kind"].items() if n)
        text = f"Leak check: {lk['leaking']} test images are copies of indexed images" + (
            f" ({kinds})" if kinds else ""
        )
        if "accuracy" in clean:
            text += (
                f"; on the {clean['n']} leak-free test images: accuracy <b>{_pct(clean['accuracy'])}</b>, "
                f"MAP@R {_pct(clean['map_at_r'])}"
            )
        notes.append(text + f"; {len(lk['within_test'])} copy pairs inside the test set (metrics.json lists them all).")
    return notes


def _report_page(index: IndexView, m: dict[str, Any], grids: list[tuple[str, str, int]]) -> str:
    """The report's ``index.html``: figures, notes, per-class and retrieval tables, the pictures."""
    import html

    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{_pct(v['precision'])}</td><td>{_pct(v['recall'])}</td>"
        f"<td>{_pct(v['f1'])}</td><td>{v['support']}</td></tr>"
        for c, v in m["per_class"].items()
    )
    ks = list(m["recall_at"])
    retrieval = "".join(
        f"<tr><td>{k}</td><td>{_pct(m['recall_at'][k])}</td><td>{_pct(m['precision_at'][k])}</td>"
        f"<td>{_pct(m['top_k_accuracy'][k])}</td></tr>"
        for k in ks
    )
    notes = _report_notes(m)
    mistakes = "".join(
        f"<h3>{html.escape(c)}: {n} misclassified</h3><img src='{name}' alt='mistakes of {html.escape(c)}'>"
        for c, name, n in grids
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lookalike evaluation</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:0.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:3px 10px;text-align:right}}
td:first-child{{text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>Evaluation of {html.escape(str(index.folder))}</h1>
<p>{m["n"]} test images, method <b>{html.escape(m["method"])}</b>: accuracy <b>{_pct(m["accuracy"])}</b>,
macro-F1 <b>{_pct(m["macro_f1"])}</b>, MAP@R <b>{_pct(m["map_at_r"])}</b>, ECE {m["ece"]:.3f}.</p>
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


def tsne_of_index(
    index: IndexView,
    out: str | os.PathLike[str],
    *,
    test_dir: str | os.PathLike[str] | None = None,
    max_points: int = 3000,
) -> Path:
    """`lookalike plot tsne`: the index's vectors (and a labelled test folder's, if given) coloured by class."""
    if len(index) == 0:
        raise LookalikeError(f"the index at {index.folder} is empty")
    extra_v = extra_l = None
    if test_dir is not None:
        items = labelled_files(test_dir, what="test images")
        vectors, pos, _, _ = embed_files(index, [p for p, _ in items])
        extra_v, extra_l = vectors, [items[i][1] for i in pos]
    from lookalike.plots import tsne_png

    return tsne_png(
        index.vectors, index.labels, out, extra_vectors=extra_v, extra_labels=extra_l, max_points=max_points
    )
