"""Classification heads by 5-fold cross-validation on ../shared/data/rooms and flowers12, plus leave-one-out retrieval.

For each dataset the shared cached index (default describer) gives the vectors; each method (kNN vote, linear probe,
shallow MLP) is fitted on four folds and predicts the fifth. Reported: accuracy, macro-F1 and ECE (mean ± std over
folds), fit time per fold and prediction time per image. Retrieval: every indexed image queries the rest of its
index (itself excluded) for R@K, P@K and MAP@R.

Run: ``flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.classify``
"""

from __future__ import annotations

import time

import numpy as np

from bench.common import shared_index
from bench.report import index_settings, markdown_table, write_section
from lookalike.classify import METHODS
from lookalike.evaluate import cross_validate, retrieval_metrics

DATASETS = ("rooms", "flowers12")


def main() -> None:
    cls_rows: list[list[object]] = []
    ret_rows: list[list[object]] = []
    for name in DATASETS:
        index = shared_index(name)
        rows = [i for i, lab in enumerate(index.labels) if lab is not None]
        X = index.vectors[rows]  # noqa: N806
        y = np.array([index.labels[i] for i in rows], dtype=object)
        n_classes = len(set(y.tolist()))
        for method in METHODS:
            t = time.perf_counter()
            r = cross_validate(X, y, method, folds=5)
            print(f"{name} {method}: {r} ({time.perf_counter() - t:.0f}s)", flush=True)
            cls_rows.append(
                [
                    name,
                    f"{len(y)} / {n_classes}",
                    method,
                    f"{r['accuracy']:.3f} ± {r['accuracy_std']:.3f}",
                    f"{r['macro_f1']:.3f} ± {r['macro_f1_std']:.3f}",
                    f"{r['ece']:.3f} ± {r['ece_std']:.3f}",
                    f"{r['fit_seconds']:.2f}",
                    f"{r['predict_ms_per_image']:.3f}",
                ]
            )
        m = retrieval_metrics(X, list(y), X, list(y), exclude=[[i] for i in range(len(y))])
        ks = ("1", "5", "10")
        recall = [f"{m['recall_at'][k]:.3f}" for k in ks]
        precision = [f"{m['precision_at'][k]:.3f}" for k in ks]
        ret_rows.append([name, *recall, *precision, f"{m['map_at_r']:.3f}"])
        print(name, m, flush=True)
    meta = shared_index(DATASETS[0]).store.meta
    pooling = meta["pooling"].get("name") if isinstance(meta["pooling"], dict) else meta["pooling"]
    body = "\n\n".join(
        [
            "## Classification (issue 4)",
            f"Vectors: the shared cached index of each dataset ({meta['model']['name']}, {pooling} pooling, "
            f"{meta['resolution']} px). Stratified 5-fold cross-validation (seed 0): each head is fitted on four "
            "folds (its own calibration split or leave-one-out inside those) and predicts the fifth. Mean ± std "
            "over folds; fit time is per fold (≈ 80 % of the images), prediction time per image, vectors given "
            "(embedding an image costs far more and is the same for every head).",
            markdown_table(
                ["data", "images / classes", "method", "accuracy", "macro-F1", "ECE", "fit s", "predict ms/img"],
                cls_rows,
            ),
            "Retrieval, each indexed image against the rest of its index (itself excluded): R@K = share of queries "
            "with a same-class image in the top K, P@K = share of same-class images in the top K, MAP@R as in "
            "Musgrave et al. (2020).",
            markdown_table(["data", "R@1", "R@5", "R@10", "P@1", "P@5", "P@10", "MAP@R"], ret_rows),
        ]
    )
    settings = {
        **index_settings(meta),
        "data": ", ".join(DATASETS),
        "folds": "5, stratified, seed 0",
        "kNN head k": 10,
        "methods": ", ".join(METHODS),
    }
    write_section("classify", body, settings)


if __name__ == "__main__":
    main()
