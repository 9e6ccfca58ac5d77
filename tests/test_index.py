"""Index build, incremental update, resume after interruption, bad input, and search correctness."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import Index
from lookalike.embed import Describer
from lookalike.errors import IndexMismatchError, IndexMissingError, LookalikeError, ModelUnavailableError
from lookalike.models import create_model
from lookalike.search import VectorSearch, knn_graph


def test_build_labels_and_metadata(sample_index: Index, sample_dir: Path) -> None:
    assert len(sample_index) == 24
    assert sample_index.classes == ["flower", "package", "portrait", "temple"]
    assert all(n.split("/")[0] == lab for n, lab in zip(sample_index.names, sample_index.labels, strict=True))
    v = sample_index.vectors
    assert v.shape == (24, sample_index.store.dim) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    table = sample_index.store.metadata().to_pylist()
    assert {"path", "size", "mtime_ns", "hash", "width", "height", "label", "exif_time", "gps_lat"} <= set(table[0])
    assert all(r["width"] > 0 and r["height"] > 0 and len(r["hash"]) == 32 for r in table)
    info = sample_index.info()
    assert info["images"] == 24 and info["labels"] == {c: 6 for c in sample_index.classes}
    assert info["model"] == "efficientnet-lite0" and info["disk_bytes"] > 0


def test_heldout_queries_find_their_own_class(sample_index: Index, sample_queries: Path) -> None:
    queries = sorted(sample_queries.glob("*.jpg"))
    results = sample_index.search_many([str(q) for q in queries], k=3)
    for q, r in zip(queries, results, strict=True):
        assert [m.label for m in r.matches] == [q.stem] * 3, (q, r.matches)
        assert [m.rank for m in r.matches] == [1, 2, 3]
        assert r.matches[0].score >= r.matches[1].score >= r.matches[2].score


def test_query_in_index_is_not_its_own_match(sample_index: Index) -> None:
    path = sample_index.paths[0]
    matches = sample_index.search(str(path), k=5)
    assert len(matches) == 5
    assert all(m.id != 0 for m in matches)
    # a byte-identical copy outside the index is the same image: also excluded
    copy = Path(os.environ.get("TMPDIR", "/tmp")) / f"copy-{os.getpid()}.jpg"
    shutil.copy(path, copy)
    try:
        assert all(m.id != 0 for m in sample_index.search(str(copy), k=5))
    finally:
        copy.unlink()


def test_search_matches_brute_force_numpy(sample_index: Index) -> None:
    rng = np.random.default_rng(1)
    q = rng.normal(size=(7, sample_index.store.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scores, ids = sample_index.searcher.search(q, 10)
    brute = q @ sample_index.vectors.T
    expected = np.argsort(-brute, axis=1, kind="stable")[:, :10]
    assert np.allclose(scores, np.take_along_axis(brute, expected, 1), atol=1e-5)
    assert (np.take_along_axis(brute, ids, 1) >= np.take_along_axis(brute, expected, 1) - 1e-5).all()


def test_vector_search_allowed_and_exclusions() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    vs = VectorSearch(v)
    allowed = np.arange(0, 50, 3)
    s, i = vs.search(v[:4], 5, allowed=allowed, exclude=[[0], [], [], [3]])
    for row in range(4):
        got = set(i[row].tolist())
        assert got <= set(allowed.tolist())
        brute = v[row] @ v[allowed].T
        banned = {0} if row == 0 else {3} if row == 3 else set()
        order = [int(allowed[j]) for j in np.argsort(-brute) if int(allowed[j]) not in banned][:5]
        assert i[row].tolist() == order
    s, i = vs.search(v[:1], 100)
    assert (i[0, 50:] == -1).all() and np.isneginf(s[0, 50:]).all()
    ids, scores = knn_graph(v, 4)
    assert ids.shape == (50, 4) and all(row not in ids[row] for row in range(50))
    assert np.allclose(scores[:, 0], np.sort(v @ v.T - 2 * np.eye(50), axis=1)[:, -1], atol=1e-5)


def test_search_modes_restrict_classes(sample_index: Index, sample_queries: Path) -> None:
    q = str(sample_queries / "temple.jpg")
    same = sample_index.search_many([q], k=4, mode="same-class")[0]
    assert same.query_class == "temple" and same.class_source == "predicted"
    assert {m.label for m in same.matches} == {"temple"}
    other = sample_index.search_many([q], k=4, mode="other-classes", label="temple")[0]
    assert other.class_source == "given" and "temple" not in {m.label for m in other.matches}
    inside = sample_index.search_many([str(sample_index.paths[0])], k=3, mode="same-class")[0]
    assert inside.class_source == "label"
    with pytest.raises(LookalikeError, match="unknown class"):
        sample_index.search(q, mode="same-class", label="Garage")


def test_incremental_update_add_change_delete_touch(photos: Path, tmp_path: Path) -> None:
    idx = Index.build(photos, tmp_path / "idx")
    assert idx.report.added == 24
    before = dict(zip(idx.names, idx.vectors, strict=True))

    again = Index.build(photos, tmp_path / "idx")
    assert (again.report.added, again.report.updated, again.report.unchanged) == (0, 0, 24)

    shutil.copy(photos / "flower/flower_00.jpg", photos / "flower/new.jpg")
    (photos / "temple/temple_00.jpg").unlink()
    img = Image.open(photos / "portrait/portrait_00.jpg").transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    img.save(photos / "portrait/portrait_00.jpg")
    st = (photos / "package/package_00.jpg").stat()
    os.utime(photos / "package/package_00.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched only

    upd = Index.build(photos, tmp_path / "idx")
    r = upd.report
    assert (r.added, r.updated, r.removed) == (1, 1, 1)
    assert r.unchanged == 22  # includes the touched file, whose content hash did not change
    assert len(upd) == 24 and "temple/temple_00.jpg" not in upd.names
    after = dict(zip(upd.names, upd.vectors, strict=True))
    assert not np.allclose(after["portrait/portrait_00.jpg"], before["portrait/portrait_00.jpg"])
    assert np.allclose(after["package/package_00.jpg"], before["package/package_00.jpg"])
    assert np.allclose(after["flower/new.jpg"], before["flower/flower_00.jpg"], atol=1e-5)
    mtimes = dict(zip(upd.names, upd.store.column("mtime_ns"), strict=True))
    assert mtimes["package/package_00.jpg"] == (photos / "package/package_00.jpg").stat().st_mtime_ns


def test_interrupted_run_resumes_without_losing_work(photos: Path, tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    original = Describer.describe_arrays

    def flaky(self, pixels, valid):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C in the middle of the run
        return original(self, pixels, valid)

    monkeypatch.setattr(Describer, "describe_arrays", flaky)
    with pytest.raises(KeyboardInterrupt):
        Index.build(photos, tmp_path / "idx", batch_size=4, checkpoint_every=4)
    parts = sorted((tmp_path / "idx" / "parts").glob("part-*.parquet"))
    assert len(parts) == 3  # three batches of four were checkpointed before the interruption

    monkeypatch.setattr(Describer, "describe_arrays", original)
    calls["n"] = 0
    idx = Index.build(photos, tmp_path / "idx", batch_size=4)
    assert idx.report.resumed == 12 and idx.report.added == 12
    assert len(idx) == 24 and not list((tmp_path / "idx" / "parts").glob("*.parquet"))
    fresh = Index.build(photos, tmp_path / "fresh")
    a = dict(zip(idx.names, idx.vectors, strict=True))
    b = dict(zip(fresh.names, fresh.vectors, strict=True))
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_bad_files_are_skipped_listed_and_not_retried(photos: Path, tmp_path: Path) -> None:
    (photos / "bad").mkdir()
    (photos / "bad/empty.jpg").write_bytes(b"")
    (photos / "bad/text.jpg").write_text("hello, I am not a JPEG\n")
    good = (photos / "flower/flower_00.jpg").read_bytes()
    (photos / "bad/truncated.jpg").write_bytes(good[: len(good) // 3])
    Image.new("RGB", (1, 1)).save(photos / "bad/dot.png")
    Image.new("1", (20000, 20000)).save(photos / "bad/huge.png")
    idx = Index.build(photos, tmp_path / "idx")
    reasons = dict(idx.report.skipped)
    assert set(reasons) == {"bad/empty.jpg", "bad/text.jpg", "bad/truncated.jpg", "bad/dot.png", "bad/huge.png"}
    assert "empty" in reasons["bad/empty.jpg"] and "too small" in reasons["bad/dot.png"]
    assert "too many pixels" in reasons["bad/huge.png"]
    assert all("\n" not in r for r in reasons.values())
    assert len(idx) == 24
    assert {s["path"] for s in idx.info()["skipped"]} == set(reasons)
    again = Index.build(photos, tmp_path / "idx")
    assert again.report.embedded == 0 and len(again.report.skipped) == 5
    (photos / "bad/text.jpg").write_bytes(good)  # fixed by the user: now indexed
    fixed = Index.build(photos, tmp_path / "idx")
    assert fixed.report.added == 1 and len(fixed) == 25 and len(fixed.report.skipped) == 4


def test_empty_folder_missing_index_unknown_model(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(LookalikeError, match="no images found"):
        Index.build(tmp_path / "empty")
    with pytest.raises(LookalikeError, match="not a folder"):
        Index.build(tmp_path / "missing")
    with pytest.raises(IndexMissingError, match="no lookalike index"):
        Index.open(tmp_path / "empty")
    with pytest.raises(ModelUnavailableError, match="unknown model"):
        create_model("resnet-9000")


def test_other_model_is_refused(photos: Path, tmp_path: Path) -> None:
    Index.build(photos, tmp_path / "idx")
    with pytest.raises(IndexMismatchError, match="--rebuild"):
        Index.build(photos, tmp_path / "idx", model="efficientnet-lite2")
    with pytest.raises(IndexMismatchError):
        Index.build(photos, tmp_path / "idx", pooling="mean")
    meta_path = tmp_path / "idx" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["weights"] = "0" * 32  # as if built with other weights of the same name
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(IndexMismatchError, match="weights"):
        Index.open(tmp_path / "idx").search(str(photos / "flower/flower_00.jpg"))


def test_second_writer_fails_fast(photos: Path, tmp_path: Path) -> None:
    idx = Index.build(photos, tmp_path / "idx")
    with idx.store.lock(), pytest.raises(LookalikeError, match="another lookalike process"):
        Index.build(photos, tmp_path / "idx")


def test_onnx_and_torch_runtimes_agree(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))
    onnx_model = create_model("efficientnet-lite0", runtime="onnx")
    assert onnx_model.runtime == "onnx" and onnx_model.onnx_path.is_file()
    assert onnx_model.onnx_path.parent == tmp_path / "cache" / "onnx"
    torch_model = create_model("efficientnet-lite0", runtime="torch")
    x = np.random.default_rng(0).integers(0, 256, size=(2, 96, 128, 3), dtype=np.uint8)
    a, b = onnx_model.features(x), torch_model.features(x)
    assert a.shape == (2, 1280, 3, 4)
    assert np.allclose(a, b, atol=1e-3)


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lookalike.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_cli_index_search_info_json_grid(photos: Path, tmp_path: Path, sample_queries: Path) -> None:
    r = _cli("index", str(photos), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "24 added" in r.stderr
    r = _cli("search", str(sample_queries / "flower.jpg"), str(sample_queries / "temple.jpg"), "--index", str(photos),
             "-k", "3", "--json", "--grid", str(tmp_path / "grid.png"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(o["query"]).stem for o in lines] == ["flower", "temple"]
    for o in lines:
        assert [m["rank"] for m in o["matches"]] == [1, 2, 3]
        assert {"path", "score", "rank", "label"} <= set(o["matches"][0])
        assert all(m["label"] == Path(o["query"]).stem for m in o["matches"])
    with Image.open(tmp_path / "grid.png") as im:
        assert im.size[0] > im.size[1] > 100
    r = _cli("info", "--index", str(photos / ".lookalike"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["images"] == 24


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["search", "q.jpg", "--index", "{tmp}/nowhere"], 1, "no lookalike index"),
        (["index", "{tmp}/nowhere"], 1, "not a folder"),
        (["index", "{tmp}", "--frobnicate"], 2, "No such option"),
        (["index", "{tmp}", "--model", "resnet-9000"], 1, "unknown model"),
        (["index", "{tmp}", "--labels", "colour"], 1, "--labels must be"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    r = _cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.returncode == code
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    if code == 1:
        assert len(r.stderr.strip().splitlines()) == 1


def test_demo_on_samples_and_on_a_users_folder(photos: Path, tmp_path: Path) -> None:
    from lookalike.samples import run_demo

    run = run_demo(None, tmp_path / "demo", k=3)
    assert run.grid.is_file() and len(run.results) == 4
    assert all(m.label == Path(r.query).stem for r in run.results for m in r.matches)
    mine = run_demo(photos, tmp_path / "demo", k=3)  # another folder: its own index, no clash with the samples'
    assert mine.index.store.path != run.index.store.path and len(mine.index) == 24
    assert all(len(r.matches) == 3 for r in mine.results)


def test_info_reports_the_fitted_head_and_when_it_goes_stale(photos: Path, tmp_path: Path) -> None:
    from lookalike.classify import fit_index

    idx = Index.build(photos, tmp_path / "idx")
    assert idx.info()["classifier"] is None
    fit_index(idx, "knn")
    head = Index.open(tmp_path / "idx").info()["classifier"]
    assert head["method"] == "knn" and head["stale"] is False and head["n_train"] == 24
    shutil.copy(photos / "flower/flower_00.jpg", photos / "flower/extra.jpg")
    assert Index.build(photos, tmp_path / "idx").info()["classifier"]["stale"] is True


# --- one configuration, one label rule -------------------------------------------------------------------------------


def test_nested_folders_get_one_label_in_index_evaluate_and_train(sample_dir: Path, tmp_path: Path) -> None:
    """``root/Kitchen/2019/a.jpg`` is a Kitchen photo for every command (the first folder under the root)."""
    from lookalike.evaluate import evaluate
    from lookalike.images import labelled_files

    root = tmp_path / "nested"
    for cls in sorted(p.name for p in sample_dir.iterdir() if p.is_dir()):
        for i, src in enumerate(sorted((sample_dir / cls).glob("*.jpg"))):
            dst = root / cls / ("2019" if i % 2 else "2020") / "deeper" / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    idx = Index.build(root, tmp_path / "idx")
    indexed = dict(zip(idx.names, idx.labels, strict=True))
    assert set(indexed.values()) == {"flower", "package", "portrait", "temple"}
    assert all(lab == name.split("/")[0] for name, lab in indexed.items())
    # training reads the same files with the same labels
    training = {p.relative_to(root).as_posix(): lab for p, lab in labelled_files(root)}
    assert training == indexed
    # evaluation knows every class (no "2019" class) and scores the nested photos against their top folder
    # (the indexed folder itself as the test set: only without the leak check, which refuses it)
    m = evaluate(idx, root, leak_check=False)
    assert m["unknown_classes"] == {} and m["n"] == len(indexed)


def test_vocab_fit_then_the_same_index_command_needs_no_rebuild(photos: Path, tmp_path: Path) -> None:
    """`index --pooling vlad`, `vocab fit --clusters 16`, `index --pooling vlad` again: the stored settings win."""
    from typer.testing import CliRunner

    from lookalike.cli import app

    runner = CliRunner()
    idx_dir = str(tmp_path / "idx")
    first = runner.invoke(
        app, ["index", str(photos), "--index", idx_dir, "--pooling", "vlad", "--clusters", "8", "--quiet"]
    )
    assert first.exit_code == 0, first.output
    fit = runner.invoke(app, ["vocab", "fit", "--index", idx_dir, "--clusters", "16", "--quiet"])
    assert fit.exit_code == 0, fit.output
    again = runner.invoke(app, ["index", str(photos), "--index", idx_dir, "--pooling", "vlad", "--quiet"])
    assert again.exit_code == 0, again.output
    assert Index.open(idx_dir).store.meta["pooling"]["clusters"] == 16
    # a real conflict names the field and both values
    with pytest.raises(IndexMismatchError, match=r"pooling\.clusters: 16 in the index, 8 asked"):
        Index.build(photos, idx_dir, pooling={"name": "vlad", "clusters": 8})
    with pytest.raises(IndexMismatchError, match="model: efficientnet-lite0 in the index, efficientnet-lite2 asked"):
        Index.build(photos, idx_dir, model="efficientnet-lite2")
    # through the CLI, on one line
    r = _cli("index", str(photos), "--index", idx_dir, "--pooling", "gem")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "pooling: vlad in the index, gem asked" in r.stderr


def test_moving_a_photo_to_another_class_folder_relabels_it(photos: Path, tmp_path: Path) -> None:
    idx = Index.build(photos, tmp_path / "idx")
    src = sorted((photos / "temple").glob("*.jpg"))[0]
    (photos / "flower" / "moved").mkdir()
    shutil.move(src, photos / "flower" / "moved" / src.name)
    again = Index.build(photos, tmp_path / "idx")
    labels = dict(zip(again.names, again.labels, strict=True))
    assert labels[f"flower/moved/{src.name}"] == "flower" and f"temple/{src.name}" not in labels
    assert again.report.added == 1 and again.report.removed == 1 and len(again) == len(idx)
