"""`evaluate` on sample photo folders, cross-validation, label suspects and the report (the metrics themselves are
tested in test_metrics.py)."""

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
from lookalike.metrics import rank_database


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


def test_test_images_that_are_in_the_index_do_not_find_themselves(
    setup,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lookalike.classify
    import lookalike.metrics
    from lookalike.classify import KNNHead

    index, train, test = setup
    mixed = tmp_path / "mixed"
    shutil.copytree(test, mixed)  # 12 fresh crops, plus one indexed image per class under another name
    own: dict[str, int] = {}
    for c in ("flower", "package", "portrait", "temple"):
        src = sorted((train / c).glob("*.jpg"))[2]
        shutil.copy(src, mixed / c / "copy.jpg")
        own[str(mixed / c / "copy.jpg")] = index.names.index(f"{c}/{src.name}")

    ranked, voted = [], []
    rank, vote = lookalike.metrics.rank_database, lookalike.classify.predict_proba

    def spy_rank(q, db, depth, exclude=None, chunk=256):  # noqa: ANN001, ANN202
        ranked.append((exclude, rank(q, db, depth, exclude, chunk)))
        return ranked[-1][1]

    def spy_vote(head, vectors, exclude=None):  # noqa: ANN001, ANN202
        voted.append(vote(head, vectors, exclude))
        return voted[-1]

    monkeypatch.setattr(lookalike.metrics, "rank_database", spy_rank)
    monkeypatch.setattr(lookalike.classify, "predict_proba", spy_vote)
    ev = run_evaluation(index, mixed, "knn", leak_check=False)  # (the leak check ranks the leak-free rows again)
    m = ev.metrics
    assert m["n"] == 16 and m["overlap"] == 4
    ((exclude, ids),) = ranked
    rows = {str(p): i for i, p in enumerate(ev.paths)}
    selves = [[own[str(p)]] if str(p) in own else [] for p in ev.paths]
    assert exclude is not None, "the index was ranked for the test images without excluding any of them"
    assert [list(e) for e in exclude] == selves  # overlap counts exactly the exclusions that were made
    assert sum(1 for e in exclude if e) == m["overlap"]
    # without the exclusion each copy is its own first match (cosine 1); with it, it is nowhere in its ranking
    assert [int(i) for i in rank_database(ev.vectors[[rows[p] for p in own]], index.vectors, 1)[:, 0]] == list(
        own.values()
    )
    for path, i in own.items():
        ranking = ids[rows[path]]
        assert i not in ranking and (ranking >= 0).sum() == ids.shape[1]
    # the kNN vote of a copy is the vote of the index without it, not one it takes part in
    (proba,) = voted
    X, y = index.vectors, np.array(index.labels, dtype=object)  # noqa: N806
    for path, i in own.items():
        keep = np.arange(len(index)) != i
        without = KNNHead(k=10).fit(X[keep], y[keep], tune=False).predict_proba(ev.vectors[rows[path]][None])[0]
        with_self = KNNHead(k=10).fit(X, y, tune=False).predict_proba(ev.vectors[rows[path]][None])[0]
        assert np.abs(with_self - without).max() > 1e-4  # the test can tell them apart
        assert proba[rows[path]] == pytest.approx(without, abs=1e-6)


def test_report_writes_pictures_and_page(setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import lookalike.plots

    index, _, test = setup
    # known mistakes: two flower crops filed under temple in the test folder; the index calls them flower
    known = tmp_path / "known"
    shutil.copytree(test, known)
    misfiled = {known / "temple" / f"misfiled_{i}.jpg" for i in range(2)}
    for i, src in enumerate(sorted((test / "flower").glob("*.jpg"))[:2]):
        shutil.copy(src, known / "temple" / f"misfiled_{i}.jpg")
    ev = run_evaluation(index, known, "knn")
    pred = dict(zip(ev.paths, ev.y_pred, strict=True))
    assert all(pred[p] == "flower" for p in misfiled)
    wrong: dict[str, list[tuple[Path, str, float]]] = {}
    for p, t, yp, conf in zip(ev.paths, ev.y_true, ev.y_pred, ev.confidence, strict=True):
        if t != yp:
            wrong.setdefault(t, []).append((p, yp, conf))
    assert "temple" in wrong and len(wrong["temple"]) >= 2

    grids: dict[str, list] = {}
    real = lookalike.plots.mistakes_png

    def spy(cls, shots, out, **kw):  # noqa: ANN001, ANN003, ANN202
        grids[cls] = list(shots)
        return real(cls, shots, out, **kw)

    monkeypatch.setattr(lookalike.plots, "mistakes_png", spy)
    page = write_report(index, ev, tmp_path / "report")
    assert page.name == "index.html"
    for name in ("confusion.png", "tsne.png", "metrics.json"):
        assert (tmp_path / "report" / name).stat().st_size > 1000
    html = page.read_text()
    assert "confusion.png" in html and "tsne.png" in html
    files = sorted(p.name for p in (tmp_path / "report").glob("mistakes-*.png"))
    assert files == sorted(f"mistakes-{c}.png" for c in wrong) and "mistakes-temple.png" in files
    assert all((tmp_path / "report" / f).stat().st_size > 1000 for f in files)
    # each grid shows that class's mistakes, most confident first, and the page counts them
    for c, shots in wrong.items():
        assert grids[c] == sorted(shots, key=lambda s: -s[2])
        assert f"{c}: {len(shots)} misclassified" in html
    assert misfiled <= {p for p, _, _ in grids["temple"]}
    # its PNGs are lookalike's pictures, not photos: a folder holding the report never indexes them
    from lookalike.images import discover

    found = discover(tmp_path)
    assert found.left_out == [(tmp_path / "report", "a lookalike evaluation report")]
    assert found.files and not [f for f in found.files if (tmp_path / "report") in f.parents]


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


def test_the_leak_free_figures_keep_the_overlap_exclusions(setup, tmp_path: Path) -> None:  # noqa: ANN001
    """With the leak check, byte-identical copies are leaks: the leak-free figures leave them out, and the figures
    on all images are those without the check."""
    index, train, test = setup
    mixed = tmp_path / "mixed"
    shutil.copytree(test, mixed)
    src = sorted((train / "temple").glob("*.jpg"))[2]
    shutil.copy(src, mixed / "temple" / "copy.jpg")
    m = evaluate(index, mixed, "knn")
    plain = evaluate(index, mixed, "knn", leak_check=False)
    assert m["overlap"] == plain["overlap"] == 1 and m["accuracy"] == plain["accuracy"]
    assert "temple/copy.jpg" in m.leaks.leaked and m["leak_free"]["n"] == m["n"] - m["leaks"]["leaking"]
