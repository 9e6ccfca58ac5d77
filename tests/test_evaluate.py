"""Metrics against hand-computed cases and reference implementations; `evaluate` on sample photo folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike.errors import LookalikeError
from lookalike.evaluate import (
    cross_validate,
    evaluate,
    index_suspects,
    label_suspects,
    run_evaluation,
    write_report,
)
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

# --- metric functions ------------------------------------------------------------------------------------------


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


def test_cross_validate_on_separable_vectors() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 12))
    y = np.repeat(["x", "y", "z"], 30)
    X = centres[np.repeat(np.arange(3), 30)] + 0.5 * rng.normal(size=(90, 12))  # noqa: N806
    X /= np.linalg.norm(X, axis=1, keepdims=True)  # noqa: N806
    r = cross_validate(X, y, "knn", folds=3)
    assert r["accuracy"] > 0.9 and r["folds"] == 3 and r["n"] == 90
    assert {"macro_f1", "ece", "fit_seconds", "predict_ms_per_image"} <= set(r)


def test_label_suspects_are_the_flipped_labels() -> None:
    rng = np.random.default_rng(5)
    centres = 3 * rng.normal(size=(3, 16))
    truth = np.repeat(["x", "y", "z"], 30)
    X = centres[np.repeat(np.arange(3), 30)] + rng.normal(size=(90, 16))  # noqa: N806
    y = truth.copy()
    flipped = {3: "y", 40: "z", 75: "x"}
    for i, c in flipped.items():
        y[i] = c
    y = np.append(y, ["w"] * 3)  # a class too small to judge is never flagged
    X = np.vstack([X, centres[0] + rng.normal(size=(3, 16))])  # noqa: N806 - and it looks like "x"
    found = label_suspects(X, y, below=0.1)
    assert {s["row"] for s in found} == set(flipped)
    assert all(s["predicted"] == truth[s["row"]] and s["label"] == flipped[s["row"]] for s in found)
    assert [s["p_label"] for s in found] == sorted(s["p_label"] for s in found) and found[-1]["p_label"] < 0.1
    with pytest.raises(LookalikeError, match="between 0 and 1"):
        label_suspects(X, y, below=1.5)


def test_cli_suspects_names_a_photo_filed_under_the_wrong_class(tmp_path: Path) -> None:
    from lookalike.cli import app
    from lookalike.index import Index
    from lookalike.samples import make_samples

    photos = make_samples(tmp_path / "photos", per_class=6, size=200)
    a, b = sorted(p.name for p in photos.iterdir())[:2]
    shutil.copy(next((photos / a).glob("*.jpg")), photos / b / "misfiled.jpg")
    index = Index.build(photos, tmp_path / "idx", labels="folders", progress=False)
    found = index_suspects(index, below=0.3)
    assert [(Path(s["path"]).name, s["label"], s["predicted"]) for s in found] == [("misfiled.jpg", b, a)]
    res = CliRunner().invoke(app, ["suspects", "--index", str(tmp_path / "idx"), "--below", "0.3", "--json"])
    assert res.exit_code == 0, res.output
    assert [Path(s["path"]).name for s in json.loads(res.stdout)] == ["misfiled.jpg"]
    res = CliRunner().invoke(app, ["suspects", "--index", str(tmp_path / "idx"), "--below", "2"])
    assert isinstance(res.exception, LookalikeError) and "between 0 and 1" in str(res.exception)  # main(): one line


# --- evaluate on sample folders ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, Path]:
    from lookalike.index import Index
    from lookalike.samples import make_samples

    base = tmp_path_factory.mktemp("eval")
    train = make_samples(base / "train", per_class=8, seed=0)
    test = make_samples(base / "test", per_class=3, seed=7)
    index = Index.build(train, base / "index")
    return index, train, test


KEYS = {"accuracy", "macro_f1", "per_class", "recall_at", "precision_at", "map_at_r"}


def test_evaluate_keys_and_values(setup) -> None:  # noqa: ANN001
    index, _, test = setup
    m = evaluate(index, test, "knn")
    assert KEYS | {"ece", "confusion", "n", "top_k_accuracy"} <= set(m)
    assert m["n"] == 12 and m["unknown_classes"] == {} and m["overlap"] == 0
    assert set(m["recall_at"]) == {"1", "5", "10"}
    assert m["accuracy"] >= 0.75  # fresh crops of the four photos: the kNN vote gets nearly all
    assert m["recall_at"]["10"] >= m["recall_at"]["1"] >= 0.75
    assert 0 <= m["ece"] <= 1 and 0 < m["map_at_r"] <= 1
    assert sum(map(sum, m["confusion"]["matrix"])) == 12


def test_unknown_test_class_is_named_and_left_out(setup, tmp_path: Path) -> None:  # noqa: ANN001
    index, _, test = setup
    mixed = tmp_path / "mixed"
    shutil.copytree(test, mixed)
    shutil.copytree(test / "temple", mixed / "Garage")
    m = evaluate(index, mixed, "knn")
    assert m["unknown_classes"] == {"Garage": 3}
    assert m["n"] == 12
    only_unknown = tmp_path / "unknown"
    shutil.copytree(test / "temple", only_unknown / "Garage")
    with pytest.raises(LookalikeError, match="Garage"):
        evaluate(index, only_unknown)
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(next((test / "temple").glob("*.jpg")), flat / "a.jpg")
    with pytest.raises(LookalikeError, match="one sub-folder per class"):
        evaluate(index, flat)


def test_test_images_that_are_in_the_index_do_not_find_themselves(setup) -> None:  # noqa: ANN001
    index, train, _ = setup
    m = evaluate(index, train, "knn")
    assert m["overlap"] == m["n"] == 32
    # without the exclusion every image would be its own first match (P@1 = 1 by construction); the number here
    # comes from other crops of the same photo
    assert 0.5 <= m["precision_at"]["1"] <= 1.0


def test_report_writes_pictures_and_page(setup, tmp_path: Path) -> None:  # noqa: ANN001
    index, _, test = setup
    ev = run_evaluation(index, test, "knn")
    page = write_report(index, ev, tmp_path / "report")
    assert page.name == "index.html"
    for name in ("confusion.png", "tsne.png", "metrics.json"):
        assert (tmp_path / "report" / name).stat().st_size > 1000
    html = page.read_text()
    assert "confusion.png" in html and "tsne.png" in html
    wrong_classes = {t for t, p in zip(ev.y_true, ev.y_pred, strict=True) if t != p}
    assert len(list((tmp_path / "report").glob("mistakes-*.png"))) == len(wrong_classes)
    # its PNGs are lookalike's pictures, not photos: a folder holding the report never indexes them
    from lookalike.images import discover

    found = discover(tmp_path)
    assert found.left_out == [(tmp_path / "report", "a lookalike evaluation report")] and not found.files


def test_mistakes_grid(setup, tmp_path: Path) -> None:  # noqa: ANN001
    from lookalike.plots import mistakes_png

    _, _, test = setup
    shots = [(p, "flower", 0.7) for p in sorted((test / "temple").glob("*.jpg"))]
    out = mistakes_png("temple", shots, tmp_path / "m.png", cols=2)
    assert out.stat().st_size > 1000


def test_cli_evaluate_json_and_tsne(setup, tmp_path: Path) -> None:  # noqa: ANN001
    from lookalike.cli import app

    index, _, test = setup
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--index", str(index.store.path), "--test", str(test), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(data) >= KEYS
    out = tmp_path / "tsne.png"
    res = runner.invoke(app, ["plot", "tsne", "--index", str(index.store.path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 1000
