"""lookalike.metrics against hand-computed cases and independent references (scikit-learn, pytorch-metric-learning's
AccuracyCalculator).

Training used AccuracyCalculator for its validation figures before it moved to lookalike.metrics, so this also
checks that a model card's precision@1 and mAP@R mean what they meant.
"""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.metrics import (
    classification_metrics,
    expected_calibration_error,
    map_at_r,
    precision_at_k,
    rank_database,
    recall_at_k,
    retrieval_metrics,
    top_k_accuracy,
)


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


# --- hand-computed cases and scikit-learn -------------------------------------------------------------------------


def test_ece_hand_computed() -> None:
    proba = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    y = np.array([0, 1, 0, 0])
    # bin of 0.9: accuracy 1/2, |0.5 - 0.9| = 0.4, weight 1/2; bin of 0.6: accuracy 1, |1 - 0.6| = 0.4, weight 1/2
    assert expected_calibration_error(proba, y) == pytest.approx(0.4)
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, np.array([0, 1])) == pytest.approx(0.0)


def test_top_k_accuracy_matches_sklearn() -> None:
    from sklearn.metrics import top_k_accuracy_score

    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(6), size=200)
    y = rng.integers(0, 6, 200)
    for k in (1, 2, 5):
        assert top_k_accuracy(proba, y, k) == pytest.approx(top_k_accuracy_score(y, proba, k=k, labels=range(6)))
    assert top_k_accuracy(proba, y, 10) == 1.0  # k beyond the number of classes


def test_precision_recall_at_k_hand_computed() -> None:
    q = ["a", "b"]
    retrieved = np.array([["a", "b", "a", "a"], ["a", "a", "b", None]], dtype=object)
    assert precision_at_k(q, retrieved, 1) == pytest.approx((1 + 0) / 2)
    assert precision_at_k(q, retrieved, 4) == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert recall_at_k(q, retrieved, 1) == pytest.approx(0.5)
    assert recall_at_k(q, retrieved, 3) == pytest.approx(1.0)


def test_map_at_r_hand_computed() -> None:
    # R = 3 relevant; results a b a: precision 1 at 1 and 2/3 at 3 → (1 + 2/3) / 3
    assert map_at_r(["a"], np.array([["a", "b", "a", "a"]], dtype=object), [3]) == pytest.approx((1 + 2 / 3) / 3)
    # a perfect ranking scores 1 whatever follows R; a query with R = 0 is skipped
    assert map_at_r(["a", "z"], np.array([["a", "a", "b"], ["a", "a", "b"]], dtype=object), [2, 0]) == 1.0


def test_map_at_r_and_precision_match_pytorch_metric_learning() -> None:
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 16))
    db_lab = rng.integers(0, 4, 120)
    q_lab = rng.integers(0, 4, 40)
    db = centres[db_lab] + 1.2 * rng.normal(size=(120, 16))
    q = centres[q_lab] + 1.2 * rng.normal(size=(40, 16))
    db = (db / np.linalg.norm(db, axis=1, keepdims=True)).astype(np.float32)
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    ours = retrieval_metrics(q, [str(v) for v in q_lab], db, [str(v) for v in db_lab], ks=(1, 5))
    ac = AccuracyCalculator(
        include=("mean_average_precision_at_r", "precision_at_1"), k="max_bin_count", device=torch.device("cpu")
    )
    ref = ac.get_accuracy(
        torch.from_numpy(q), torch.from_numpy(q_lab), torch.from_numpy(db), torch.from_numpy(db_lab), False
    )
    assert 0.2 < ours["map_at_r"] < 0.99  # a non-trivial case
    assert ours["map_at_r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)
    assert ours["precision_at"]["1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)


def test_classification_metrics_match_sklearn() -> None:
    from sklearn.metrics import f1_score, precision_score, recall_score

    y_true = ["a", "a", "b", "b", "c", "c", "c"]
    y_pred = ["a", "b", "b", "b", "c", "a", "c"]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    p = precision_score(y_true, y_pred, average=None, labels=["a", "b", "c"])
    r = recall_score(y_true, y_pred, average=None, labels=["a", "b", "c"])
    for i, c in enumerate("abc"):
        assert m["per_class"][c]["precision"] == pytest.approx(p[i])
        assert m["per_class"][c]["recall"] == pytest.approx(r[i])
    assert m["confusion"]["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]


def test_rank_database_is_exact_and_honours_exclusions() -> None:
    rng = np.random.default_rng(2)
    db = rng.normal(size=(50, 8)).astype(np.float32)
    q = rng.normal(size=(7, 8)).astype(np.float32)
    expected = np.argsort(-(q @ db.T), axis=1, kind="stable")
    assert np.array_equal(rank_database(q, db, 10), expected[:, :10])
    excl = [[int(expected[i, 0])] for i in range(7)]  # drop each query's best: the next ten move up
    assert np.array_equal(rank_database(q, db, 10, excl), expected[:, 1:11])
    assert (rank_database(q[:2], db[:5], 8)[:, 5:] == -1).all()  # fewer database rows than asked: padded
