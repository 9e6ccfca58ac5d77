"""Classification heads: fitting, calibration, storage in the index, staleness, bad input, CLI."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike.classify import (
    METHODS,
    KNNHead,
    LinearHead,
    MLPHead,
    Prediction,
    fit_index,
    fit_temperature,
    head_info,
    training_data,
)
from lookalike.errors import LookalikeError
from lookalike.index import Index
from lookalike.samples import make_samples


def _blobs(n_per: int, seed: int, spread: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(3, 32))
    y = np.repeat(np.array(["red", "green", "blue"], dtype=object), n_per)
    X = centres[np.repeat(np.arange(3), n_per)] + spread * rng.normal(size=(3 * n_per, 32))  # noqa: N806
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), y


@pytest.mark.parametrize(
    "head", [KNNHead(k=5), LinearHead(), MLPHead(max_epochs=40, patience=8)], ids=["knn", "linear", "mlp"]
)
def test_heads_fit_and_predict_held_out_vectors(head) -> None:  # noqa: ANN001
    X, y = _blobs(40, seed=0)  # noqa: N806
    Xt, yt = _blobs(20, seed=1)  # noqa: N806
    head.fit(X, y)
    assert list(head.classes_) == ["blue", "green", "red"]
    proba = head.predict_proba(Xt)
    assert proba.shape == (60, 3)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert np.mean(head.predict(Xt) == yt) >= 0.9
    assert 0 <= head.metrics_["val_ece"] <= 1


def test_temperature_scaling_recovers_overconfidence() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(4000, 4))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p])  # labels drawn from softmax(logits): calibrated at T = 1
    assert fit_temperature(logits, y) == pytest.approx(1.0, abs=0.1)
    assert fit_temperature(3 * logits, y) == pytest.approx(3.0, rel=0.1)  # 3x too confident → T ≈ 3


def test_knn_vote_tuning_is_calibrated() -> None:
    X, y = _blobs(60, seed=2, spread=1.4)  # overlapping classes: probabilities must be spread, not 0/1  # noqa: N806
    head = KNNHead(k=10).fit(X, y)
    Xt, yt = _blobs(60, seed=3, spread=1.4)  # noqa: N806
    from lookalike.metrics import expected_calibration_error

    proba = head.predict_proba(Xt)
    yi = np.searchsorted(head.classes_, yt)
    assert expected_calibration_error(proba, yi) < 0.15
    assert 0.2 < proba.max(axis=1).mean() < 0.999


def test_single_class_training_data_is_refused() -> None:
    X, _ = _blobs(5, seed=0)  # noqa: N806
    with pytest.raises(LookalikeError, match="at least two classes"):
        LinearHead().fit(X, ["a"] * len(X))


# --- on an index of sample photos ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cls")
    make_samples(base / "photos", per_class=8, seed=0)
    make_samples(base / "held", per_class=3, seed=5)  # fresh crops never indexed
    return base


@pytest.fixture(scope="module")
def built(samples: Path) -> Index:
    return Index.build(samples / "photos", samples / "index")


def _held_out(samples: Path) -> tuple[list[str], list[str]]:
    paths = sorted((samples / "held").glob("*/*.jpg"))
    return [str(p) for p in paths], [p.parent.name for p in paths]


def test_unfitted_index_classifies_with_the_default_knn_vote(built: Index, samples: Path) -> None:
    """No `lookalike fit` yet: classify is the kNN vote with T = 0.1 over k = 10, and it stores nothing."""
    assert head_info(built) is None and not (built.store.path / "head.json").exists()
    queries, truth = _held_out(samples)
    preds = built.classify(queries)
    assert all(isinstance(p, Prediction) and p.method == "knn" for p in preds)
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-6 for p in preds)
    classes = ["flower", "package", "portrait", "temple"]
    assert set(preds[0].probabilities) == set(classes)
    assert np.mean([p.label == t for p, t in zip(preds, truth, strict=True)]) >= 0.75
    # the probabilities are the documented vote, computed here by hand: p(c) ∝ Σ exp(cos / 0.1) over the 10 nearest
    # indexed images of class c, with the unfitted head's 1 % uniform smoothing; a tuned T would give other numbers
    sims = built.embed(queries) @ built.vectors.T
    labels = np.array(built.labels, dtype=object)
    for row, pred in zip(sims, preds, strict=True):
        nearest = np.argsort(-row, kind="stable")[:10]
        w = np.exp(row[nearest] / 0.1)
        vote = {c: float(w[labels[nearest] == c].sum() / w.sum()) for c in classes}
        expected = {c: 0.99 * v + 0.01 / len(classes) for c, v in vote.items()}
        assert pred.probabilities == pytest.approx(expected, abs=1e-4)
    tuned = KNNHead(k=10).fit(*training_data(built))  # what a fitted head would say: not the same
    assert tuned.temperature != 0.1
    assert head_info(built) is None and not (built.store.path / "head.json").exists()  # classifying stored nothing


def test_method_is_fitted_on_the_spot_and_not_stored(built: Index, samples: Path, tmp_path: Path) -> None:
    shutil.copytree(samples / "index", tmp_path / "index")
    index = Index.open(tmp_path / "index")
    head_files = [tmp_path / "index" / "head.json", tmp_path / "index" / "head.npz"]
    queries, truth = _held_out(samples)
    # no stored head: --method linear fits a linear probe now, on the index, and leaves the folder alone
    preds = index.classify(queries, method="linear")
    assert {p.method for p in preds} == {"linear"}
    assert np.mean([p.label == t for p, t in zip(preds, truth, strict=True)]) >= 0.75
    reference = LinearHead().fit(*training_data(index)).predict_proba(index.embed(queries))
    got = np.array([[p.probabilities[c] for c in sorted(p.probabilities)] for p in preds])
    assert np.allclose(got, reference, atol=1e-5)
    assert head_info(index) is None and not any(f.exists() for f in head_files)
    assert {p.method for p in Index.open(tmp_path / "index").classify(queries[:2])} == {"knn"}  # the default again
    # a stored head of another method is neither used nor replaced by --method
    fit_index(index, "knn")
    stored = [f.read_bytes() for f in head_files]
    assert {p.method for p in index.classify(queries, method="linear")} == {"linear"}
    assert [f.read_bytes() for f in head_files] == stored and head_info(index)["method"] == "knn"
    reopened = Index.open(tmp_path / "index")
    assert {p.method for p in reopened.classify(queries[:2], method="linear")} == {"linear"}
    assert {p.method for p in reopened.classify(queries[:2])} == {"knn"}
    assert [f.read_bytes() for f in head_files] == stored


@pytest.mark.parametrize("method", METHODS)
def test_fit_stores_head_and_classify_uses_it(method: str, samples: Path, tmp_path: Path) -> None:
    shutil.copytree(samples / "index", tmp_path / "index")
    index = Index.open(tmp_path / "index")
    info = fit_index(index, method, k=5)
    assert info["method"] == method and info["classes"] == ["flower", "package", "portrait", "temple"]
    stored = json.loads((tmp_path / "index" / "head.json").read_text())
    assert stored["method"] == method and not head_info(index)["stale"]
    reopened = Index.open(tmp_path / "index")
    queries, truth = _held_out(samples)
    preds = reopened.classify(queries)
    assert {p.method for p in preds} == {method}
    assert np.mean([p.label == t for p, t in zip(preds, truth, strict=True)]) >= 0.75
    assert reopened.predict_class(reopened.embed([queries[0]])[0]) == preds[0].label


def _copy_built(samples: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the photos and their index, laid out alike (the index finds its photos relatively)."""
    shutil.copytree(samples / "photos", tmp_path / "photos")
    shutil.copytree(samples / "index", tmp_path / "index")
    return tmp_path / "photos", tmp_path / "index"


def _add(photos: Path, samples: Path) -> str:
    shutil.copy(samples / "held" / "temple" / "temple_00.jpg", photos / "temple" / "new.jpg")
    return "temple/new.jpg"


def _remove(photos: Path, samples: Path) -> str:
    (photos / "temple" / "temple_03.jpg").unlink()
    return "temple/temple_03.jpg"


def _relabel(photos: Path, samples: Path) -> str:
    shutil.move(photos / "temple" / "temple_03.jpg", photos / "flower" / "temple_03.jpg")  # same content, new class
    return "flower/temple_03.jpg"


def _reembed(photos: Path, samples: Path) -> str:
    (photos / "temple" / "temple_03.jpg").write_bytes((samples / "held" / "temple" / "temple_01.jpg").read_bytes())
    return "temple/temple_03.jpg"  # same path and class, new content


@pytest.mark.parametrize(
    ("change", "method"),
    [(_add, "linear"), (_remove, "knn"), (_relabel, "linear"), (_reembed, "linear")],
    ids=["added", "removed", "relabelled", "re-embedded"],
)
def test_a_head_goes_stale_when_the_index_changes(built: Index, samples: Path, tmp_path: Path, change, method) -> None:  # noqa: ANN001
    """README: images added, removed, moved to another class folder or re-embedded make the head stale: `info`
    says so and classify / evaluate stop with how to refit, until `lookalike fit` runs again."""
    from lookalike import cli
    from lookalike.evaluate import evaluate

    photos, index_dir = _copy_built(samples, tmp_path)
    before = Index.open(index_dir)
    fit_index(before, method)
    assert not head_info(before)["stale"]
    old = dict(zip(before.names, zip(before.store.column("hash"), before.labels, strict=True), strict=True))
    name = change(photos, samples)
    index = Index.build(photos, index_dir)
    new = dict(zip(index.names, zip(index.store.column("hash"), index.labels, strict=True), strict=True))
    # the change reached the index as intended
    if change is _add:
        assert name in new and name not in old and len(index) == 33
    elif change is _remove:
        assert name in old and name not in new and len(index) == 31
    elif change is _relabel:
        assert new[name] == (old["temple/temple_03.jpg"][0], "flower") and len(index) == 32
    else:
        assert new[name][1] == "temple" and new[name][0] != old[name][0] and len(index) == 32
    assert head_info(index)["stale"] and index.info()["classifier"]["stale"]
    res = CliRunner().invoke(cli.app, ["info", "--index", str(index_dir), "--json"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)["classifier"]
    assert shown["method"] == method and shown["stale"] is True
    query = str(samples / "held" / "flower" / "flower_00.jpg")
    with pytest.raises(LookalikeError, match=rf"changed since.*lookalike fit --index .* --method {method}"):
        index.classify([query])
    with pytest.raises(LookalikeError, match=r"changed since.*lookalike fit"):
        Index.open(index_dir).classify([query])
    with pytest.raises(LookalikeError, match=r"changed since.*lookalike fit"):
        evaluate(index, samples / "held")
    fit_index(index, method)
    assert not head_info(index)["stale"] and not Index.open(index_dir).info()["classifier"]["stale"]
    assert Index.open(index_dir).classify([query])[0].method == method


def test_same_class_search_uses_the_predicted_class(built: Index, samples: Path) -> None:
    q = str(samples / "held" / "flower" / "flower_00.jpg")  # folder "flower" is a class: use a copy elsewhere
    loose = samples / "loose.jpg"
    shutil.copy(q, loose)
    res = built.search_many([str(loose)], 3, mode="same-class")[0]
    assert res.class_source == "predicted" and res.query_class == "flower"
    assert {m.label for m in res.matches} == {"flower"}


def test_unlabelled_and_single_class_indexes_are_refused(samples: Path, tmp_path: Path) -> None:
    unlabelled = Index.build(samples / "photos", tmp_path / "nolabels", labels="none")
    with pytest.raises(LookalikeError, match="no labels"):
        unlabelled.classify([str(samples / "loose.jpg")] if (samples / "loose.jpg").exists() else [np.zeros(1)])
    with pytest.raises(LookalikeError, match="no labels"):
        fit_index(unlabelled, "knn")
    one = tmp_path / "one"
    shutil.copytree(samples / "photos" / "temple", one / "temple")
    single = Index.build(one, tmp_path / "single")
    with pytest.raises(LookalikeError, match="one class"):
        fit_index(single, "mlp")
    from lookalike.evaluate import evaluate

    with pytest.raises(LookalikeError, match="one class"):
        evaluate(single, samples / "held")


def test_cli_fit_classify_and_one_line_errors(built: Index, samples: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from lookalike import cli

    shutil.copytree(samples / "index", tmp_path / "index")
    runner = CliRunner()
    res = runner.invoke(cli.app, ["fit", "--index", str(tmp_path / "index"), "--method", "knn", "--k", "7", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["params"]["k"] == 7
    queries, truth = _held_out(samples)
    res = runner.invoke(cli.app, ["classify", *queries[:2], "--index", str(tmp_path / "index"), "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [r["label"] for r in rows] == truth[:2]
    assert all(r["method"] == "knn" and set(r["probabilities"]) == set(built.classes) for r in rows)
    # bad input through the real entry point: one line on stderr, exit 1, no traceback
    Index.build(samples / "photos", tmp_path / "nolabels", labels="none")
    argv = sys.argv
    sys.argv = ["lookalike", "classify", queries[0], "--index", str(tmp_path / "nolabels")]
    try:
        with pytest.raises(SystemExit) as exc:
            cli.main()
    finally:
        sys.argv = argv
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "no labels" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
