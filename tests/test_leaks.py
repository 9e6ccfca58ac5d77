"""The leak check (`evaluate`, `lookalike leaks`, `train`'s warning), uniqueness scores and the notebook displays."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from lookalike.errors import LookalikeError


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """An index of sample crops and a test folder of unrelated pictures plus planted copies of indexed photos."""
    from lookalike.index import Index
    from lookalike.samples import make_samples

    base = tmp_path_factory.mktemp("leaks")
    train = make_samples(base / "train", per_class=5, size=200, seed=0)
    index = Index.build(train, base / "index", progress=False)
    test = base / "test"
    rng = np.random.default_rng(1)
    classes = sorted(p.name for p in train.iterdir())
    for c in classes:  # fresh pictures: smooth random colour fields, like nothing indexed
        (test / c).mkdir(parents=True)
        for i in range(2):
            small = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
            Image.fromarray(small).resize((200, 200), Image.Resampling.BICUBIC).save(test / c / f"fresh_{i}.jpg")
    src = {c: sorted((train / c).glob("*.jpg")) for c in classes}
    truth = {}
    a = Image.open(src[classes[0]][0]).convert("RGB")
    a.resize((120, 120), Image.Resampling.LANCZOS).save(test / classes[0] / "resized.jpg", quality=90)
    truth[f"{classes[0]}/resized.jpg"] = src[classes[0]][0]
    b = Image.open(src[classes[1]][1]).convert("RGB")
    b.save(test / classes[1] / "recompressed.jpg", quality=30)
    truth[f"{classes[1]}/recompressed.jpg"] = src[classes[1]][1]
    c = Image.open(src[classes[3]][2]).convert("RGB")  # the temple: textured (a face is too flat to line up cropped)
    w, h = c.size
    c.crop((w // 10, h // 12, w - w // 20, h - h // 20)).save(test / classes[3] / "cropped.jpg", quality=90)
    truth[f"{classes[3]}/cropped.jpg"] = src[classes[3]][2]
    d = Image.open(src[classes[2]][3]).convert("RGB")
    ImageOps.mirror(d).save(test / classes[2] / "mirrored.jpg", quality=90)
    truth[f"{classes[2]}/mirrored.jpg"] = src[classes[2]][3]
    shutil.copy(src[classes[0]][1], test / classes[0] / "identical.jpg")
    truth[f"{classes[0]}/identical.jpg"] = src[classes[0]][1]
    shutil.copy(test / classes[1] / "fresh_0.jpg", test / classes[1] / "fresh_0_again.jpg")  # inside the test set
    return index, train, test, {k: v.relative_to(train).as_posix() for k, v in truth.items()}


def test_planted_copies_are_found_with_their_twin_and_fresh_images_are_not(planted) -> None:  # noqa: ANN001
    from lookalike.leaks import check_leaks

    index, _, test, truth = planted
    report = check_leaks(index, test)
    found = {x["path"]: x["twins"] for x in report.leaks}
    assert set(found) == set(truth)
    for path, twin in truth.items():
        assert found[path][0]["name"] == twin
    kinds = {p: t[0]["kind"] for p, t in found.items()}
    assert kinds[next(p for p in truth if p.endswith("identical.jpg"))] == "identical"
    assert kinds[next(p for p in truth if p.endswith("mirrored.jpg"))] == "mirrored"
    assert {kinds[p] for p in truth if p.split("/")[-1] in ("resized.jpg", "cropped.jpg", "recompressed.jpg")} == {
        "copy"
    }
    inside = [(w["a"].split("/")[-1], w["b"].split("/")[-1], w["kind"]) for w in report.within_test]
    assert ("fresh_0.jpg", "fresh_0_again.jpg", "identical") in inside  # (the samples are crops of 4 photos: more)
    assert not any("fresh_1" in a + b for a, b, _ in inside)
    assert report.checked == 14 and report.counts()["copy"] == 3
    json.dumps(report.to_dict())


def test_evaluate_gives_the_figures_twice_and_the_report(planted) -> None:  # noqa: ANN001
    from lookalike.evaluate import evaluate

    index, _, test, truth = planted
    m = evaluate(index, test, "knn")
    assert m["n"] == 14 and m["leaks"]["leaking"] == len(truth) == len(m.leaks)
    assert m["leak_free"]["n"] == 14 - len(truth) and m["leak_free"]["excluded"] == len(truth)
    assert {"accuracy", "macro_f1", "recall_at", "map_at_r", "per_class"} <= set(m["leak_free"])
    assert m["overlap"] == 1  # byte-identical: excluded from its own ranking as before
    json.dumps(m)
    skipped = evaluate(index, test, "knn", leak_check=False)
    assert "leaks" not in skipped and "leak_free" not in skipped and skipped.leaks is None
    assert skipped["accuracy"] == m["accuracy"]  # the figures on all images do not change
    assert "leak-free" in m._repr_html_()


def test_turned_copies_need_orientations(planted, tmp_path: Path) -> None:  # noqa: ANN001
    from lookalike.leaks import check_leaks

    index, train, _, _ = planted
    test = tmp_path / "turned"
    (test / "x").mkdir(parents=True)
    src = sorted(train.rglob("*.jpg"))[0]
    Image.open(src).convert("RGB").transpose(Image.Transpose.ROTATE_90).save(test / "x" / "turned.jpg", quality=90)
    assert not check_leaks(index, test).leaks
    report = check_leaks(index, test, orientations=True)
    assert [(x["twins"][0]["name"], x["twins"][0]["kind"]) for x in report.leaks] == [
        (src.relative_to(train).as_posix(), "turned")
    ]
    assert report.leaks[0]["twins"][0]["turn"] == "rot90"


def test_bad_test_folders_are_refused_in_one_line(planted, tmp_path: Path) -> None:  # noqa: ANN001
    from lookalike.evaluate import evaluate
    from lookalike.leaks import check_leaks

    index, train, _, _ = planted
    for folder, what in ((train, "is the indexed folder"), (train / "temple", "inside the indexed folder"),
                         (train.parent, "holds the indexed folder")):  # fmt: skip
        for call in (lambda f=folder: check_leaks(index, f), lambda f=folder: evaluate(index, f)):
            with pytest.raises(LookalikeError, match=what) as exc:
                call()
            assert "\n" not in str(exc.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LookalikeError, match="no images found"):
        check_leaks(index, empty)
    with pytest.raises(LookalikeError, match="no labelled test images"):
        evaluate(index, empty)


def test_cli_leaks_and_evaluate(planted) -> None:  # noqa: ANN001
    from lookalike.cli import app

    index, train, test, truth = planted
    idx = str(index.store.path)
    res = CliRunner().invoke(app, ["leaks", "--index", idx, "--test", str(test), "--json", "-q"])
    assert res.exit_code == 0, res.output
    assert {x["path"] for x in json.loads(res.stdout)["leaks"]} == set(truth)
    res = CliRunner().invoke(app, ["leaks", "--index", idx, "--test", str(test), "-q"])
    assert res.exit_code == 0 and "5 of 14 test images have a copy in the index" in res.output
    res = CliRunner().invoke(app, ["evaluate", "--index", idx, "--test", str(test), "-q"])
    assert res.exit_code == 0, res.output
    assert "leak-free" in res.output and "mirrored" in res.output
    res = CliRunner().invoke(app, ["evaluate", "--index", idx, "--test", str(test), "--no-leak-check", "--json"])
    assert res.exit_code == 0 and "leaks" not in json.loads(res.stdout)
    res = CliRunner().invoke(app, ["leaks", "--index", idx, "--test", str(train)])
    assert isinstance(res.exception, LookalikeError) and "own leak" in str(res.exception)


def test_split_leaks_finds_a_held_out_copy(planted) -> None:  # noqa: ANN001
    from lookalike.leaks import split_leaks

    index, _, test, truth = planted
    mirrored = next(test / p for p in truth if p.endswith("mirrored.jpg"))
    twin = index.root / truth[mirrored.relative_to(test).as_posix()]
    paths = [*index.paths, mirrored]
    vectors = np.concatenate([index.vectors, index.embed([mirrored])])
    found = split_leaks(vectors, paths, np.arange(len(index)), np.array([len(index)]))
    assert [(Path(f["held_out"]).name, Path(f["train"])) for f in found] == [("mirrored.jpg", twin)]


# --- uniqueness --------------------------------------------------------------------------------------------------


def test_uniqueness_formula_copies_at_zero_outlier_at_one() -> None:
    from lookalike.uniqueness import uniqueness_scores

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 16)).astype(np.float32)
    x[1] = x[0]  # a copy
    x[2] = x[0]
    x[3] = x[0]  # ... three of them: their 3 nearest are at distance 0
    x[29] = -x[:28].mean(axis=0) * 10 + rng.normal(size=16)  # far from everything
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    u, raw = uniqueness_scores(x)
    assert u[0] == pytest.approx(0, abs=1e-3) and u.max() == pytest.approx(1.0) and u.min() >= 0
    # the formula by hand: 0.6, 0.3, 0.1 of the Euclidean distances to the 3 nearest others
    d = np.sqrt(np.clip(2 - 2 * x @ x.T, 0, 4))
    np.fill_diagonal(d, np.inf)
    near = np.sort(d, axis=1)[:, :3]
    np.testing.assert_allclose(raw, near @ np.array([0.6, 0.3, 0.1]), atol=1e-3)
    np.testing.assert_allclose(u, raw / raw.max(), atol=1e-5)
    with pytest.raises(LookalikeError, match="at least 2"):
        uniqueness_scores(x[:1])


def test_uniqueness_of_an_index_is_stored_and_shown(planted, tmp_path: Path) -> None:  # noqa: ANN001
    from lookalike.cli import app
    from lookalike.store import UNIQUENESS_FILE
    from lookalike.uniqueness import load_uniqueness, uniqueness

    index, *_ = planted
    u = uniqueness(index)
    assert len(u.scores) == len(index) and (index.store.path / UNIQUENESS_FILE).is_file()
    again, why = load_uniqueness(index)
    assert why is None and np.array_equal(again.scores, u.scores)
    assert u.most_redundant(3)[0] == int(np.argmin(u.scores))
    assert "most redundant" in u._repr_html_() and "data:image/jpeg;base64," in u._repr_html_()
    res = CliRunner().invoke(app, ["unique", "--index", str(index.store.path), "--json", "--top", "5",
                                   "--sheets", str(tmp_path / "sheets")])  # fmt: skip
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["images"] == len(index) and len(d["most_redundant"]) == 5 and d["k"] == 3
    assert {p.name for p in (tmp_path / "sheets").iterdir()} == {"most-redundant.png", "most-isolated.png"}


# --- notebook displays --------------------------------------------------------------------------------------------


def test_search_results_are_lists_that_show_thumbnails(planted) -> None:  # noqa: ANN001
    from lookalike.display import MAX_THUMBS, Matches, matches_html

    index, train, *_ = planted
    q = sorted(train.rglob("*.jpg"))[0]
    found = index.search(q, k=3)
    assert isinstance(found, list) and isinstance(found, Matches) and len(found) == 3
    assert found[:1] == [found[0]] and found == list(found)
    html = found._repr_html_()
    assert html.count("data:image/jpeg;base64,") == 3 and f"{found[0].score:.3f}" in html
    assert found[0].name in html and "file://" in html
    assert "No matches." in Matches()._repr_html_()
    many = matches_html([found[0]] * (MAX_THUMBS + 10))
    assert many.count("data:image/jpeg;base64,") == MAX_THUMBS and "and 10 more" in many
    preds = index.classify([q])
    assert preds[0].path == str(q) and "data:image/jpeg" in preds._repr_html_() and "path" not in preds[0].to_dict()
    assert preds[0].label in preds[0]._repr_html_()


def test_cluster_and_plan_displays(planted) -> None:  # noqa: ANN001
    from lookalike.cluster import cluster_index
    from lookalike.dedupe import Plan, build_plan, make_plan

    index, *_ = planted
    result = cluster_index(index, save=False) if "save" in cluster_index.__code__.co_varnames else cluster_index(index)
    assert "clusters of" in result._repr_html_()
    plan = build_plan(index)
    assert isinstance(plan, Plan) and "Nothing has moved" in plan._repr_html_()
    assert isinstance(make_plan(index), dict)  # the JSON object, as before
    json.dumps(plan.to_dict())


def test_a_missing_image_shows_as_a_box_and_nothing_imports_jupyter(tmp_path: Path) -> None:
    from lookalike.display import tile

    assert "no preview" in tile(tmp_path / "gone.jpg", ["x"])
    code = (
        "import sys, lookalike, lookalike.index, lookalike.display, lookalike.leaks, lookalike.uniqueness; "
        "assert not {'IPython', 'ipykernel', 'nbformat'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_warns_when_its_held_out_split_leaks(sample_dir: Path, tmp_path: Path) -> None:
    from lookalike.cli import app
    from lookalike.training import TrainOptions, train

    data = tmp_path / "data"
    shutil.copytree(sample_dir, data)
    for p in sorted(data.rglob("*.jpg")):  # every photo twice: whatever the split, copies straddle it
        ImageOps.mirror(Image.open(p)).save(p.with_name("mirror_" + p.name), quality=90)
    said: list[str] = []
    opts = TrainOptions(resolution=64, epochs=1, dim=16, batch_size=16)
    result = train(data, tmp_path / "model", opts, log=said.append)
    assert result.leaks and all(Path(x["held_out"]).name.removeprefix("mirror_") ==
                                Path(x["train"]).name.removeprefix("mirror_") for x in result.leaks)  # fmt: skip
    assert any("validation images are copies of training images" in line for line in said)
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert card["held_out_leaks"]["count"] == len(result.leaks)
    res = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "m2"), "--resolution", "64",
                                   "--epochs", "1", "--dim", "16", "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "validation images are copies of training images" in res.output


def test_near_copies_are_verified_by_local_features_when_the_index_has_them(planted) -> None:  # noqa: ANN001
    """(Last: it computes the index's local features.) A test image whose vector equals an indexed one but whose
    pixels do not line up is a near-copy by the cosine alone; once the index has local features, only a pair that
    matches geometrically stays one."""
    from lookalike.leaks import find_leaks

    index, _, test, _ = planted
    names = index.names
    src = next(i for i, n in enumerate(names) if n.startswith("temple/"))
    other = next(i for i, n in enumerate(names) if n.startswith("portrait/"))
    turned = test / "temple" / "turned_copy.jpg"
    Image.open(index.paths[src]).convert("RGB").transpose(Image.Transpose.ROTATE_90).save(turned, quality=95)
    stranger = index.paths[other]  # shown as the temple's vector: same descriptor, other pixels
    vectors = index.vectors[[src, src]]

    def kinds() -> list[tuple[str, str, bool]]:
        r = find_leaks(index, vectors, [turned, stranger], ["", ""], test_root=test, within=False)
        return [(x["path"].split("/")[-1], x["twins"][0]["kind"], "inliers" in x["twins"][0]) for x in r.leaks]

    assert kinds() == [(stranger.name, "near-copy", False), ("turned_copy.jpg", "near-copy", False)]
    index.local_features()
    assert kinds() == [("turned_copy.jpg", "near-copy", True)]
    turned.unlink()


def test_map_colour_codes_by_uniqueness(planted) -> None:  # noqa: ANN001
    from lookalike.explore import TIME_STEPS, UNIQUENESS_COLOR, color_codes
    from lookalike.uniqueness import uniqueness

    index, *_ = planted
    u = uniqueness(index)
    codes, legend = color_codes(index, UNIQUENESS_COLOR)
    assert len(legend) == 2 and codes.min() >= 1 and codes.max() == TIME_STEPS
    assert codes[int(np.argmax(u.scores))] == TIME_STEPS


def test_a_display_that_fails_says_so_in_a_line() -> None:
    from lookalike.display import matches_html

    out = matches_html([object()])  # not a Match
    assert "could not draw this" in out and "Traceback" not in out
