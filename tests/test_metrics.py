"""lookalike.metrics against an independent reference: pytorch-metric-learning's AccuracyCalculator.

Training used AccuracyCalculator for its validation figures before it moved to lookalike.metrics, so this also
checks that a model card's precision@1 and mAP@R mean what they meant.
"""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.metrics import map_at_r, precision_at_k, rank_database, retrieval_metrics


def _labelled_unit_vectors(seed: int, n_classes: int, n_db: int, n_q: int, spread: float) -> tuple:
    """Noisy points around class centres, L2-normalised (cosine and L2 rank alike, as for every embedding here)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, 16))
    db_lab, q_lab = rng.integers(0, n_classes, n_db), rng.integers(0, n_classes, n_q)
    db = centres[db_lab] + spread * rng.normal(size=(n_db, 16))
    q = centres[q_lab] + spread * rng.normal(size=(n_q, 16))
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(q), q_lab, unit(db), db_lab


def _accuracy_calculator(q: np.ndarray, q_lab: np.ndarray, db: np.ndarray, db_lab: np.ndarray) -> dict:
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count", device=torch.device("cpu")
    )
    return calc.get_accuracy(
        torch.from_numpy(q), torch.from_numpy(q_lab), torch.from_numpy(db), torch.from_numpy(db_lab),
        ref_includes_query=False,
    )  # fmt: skip


@pytest.mark.parametrize(("seed", "n_classes", "spread"), [(0, 4, 1.2), (1, 7, 0.8), (2, 3, 2.0)])
def test_map_at_r_and_precision_at_1_match_pytorch_metric_learning(seed: int, n_classes: int, spread: float) -> None:
    q, q_lab, db, db_lab = _labelled_unit_vectors(seed, n_classes, 150, 50, spread)
    ref = _accuracy_calculator(q, q_lab, db, db_lab)

    # the functions themselves, on a ranking of the database
    r = np.array([(db_lab == c).sum() for c in q_lab])
    ids = rank_database(q, db, int(r.max()))
    retrieved = db_lab[ids]
    assert 0.2 < map_at_r(q_lab, retrieved, r) < 0.99  # a non-trivial case
    assert map_at_r(q_lab, retrieved, r) == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)
    assert precision_at_k(q_lab, retrieved, 1) == pytest.approx(ref["precision_at_1"], abs=1e-6)

    # and as retrieval_metrics reports them, with class names for labels
    ours = retrieval_metrics(q, [f"c{v}" for v in q_lab], db, [f"c{v}" for v in db_lab], ks=(1,))
    assert ours["map_at_r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)
    assert ours["precision_at"]["1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)


def test_training_validation_figures_match_pytorch_metric_learning() -> None:
    from lookalike.training import validation_metrics

    q, q_lab, db, db_lab = _labelled_unit_vectors(3, 5, 120, 40, 1.0)
    ref = _accuracy_calculator(q, q_lab, db, db_lab)
    ours = validation_metrics(q, q_lab, db, db_lab)
    assert set(ours) == {"precision_at_1", "map_at_r"}
    assert ours["precision_at_1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
    assert ours["map_at_r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)
