"""`lookalike train`: each loss yields a loadable model that indexes and searches; resume; bad input.

Tiny resolution (64 px) and one or two epochs keep this fast; the sample folders are real-photo crops.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest

from lookalike.errors import LookalikeError, ModelUnavailableError
from lookalike.models import create_model
from lookalike.models.base import file_hash
from lookalike.training import TrainOptions, train

RES = 64


def _opts(**kw: object) -> TrainOptions:
    base = {"resolution": RES, "epochs": 2, "dim": 32, "batch_size": 16}
    return TrainOptions(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "model"
    train(sample_dir, out, _opts(epochs=3))
    return out


def test_model_folder_card_and_plots(trained: Path, sample_dir: Path) -> None:
    for name in ("model.json", "MODEL.md", "weights.pt", "curves.png", "tsne.png", "complete"):
        assert (trained / name).is_file(), name
    assert not (trained / "run").exists()  # the checkpoint is dropped once the model is complete
    card = json.loads((trained / "model.json").read_text())
    assert card["format_version"] == 1 and card["loss"] == "normsoftmax" and card["scale"] == 20
    assert card["temperature"] == pytest.approx(0.05)
    assert [c["name"] for c in card["classes"]] == sorted(p.name for p in sample_dir.iterdir())
    assert card["data"]["train"] + card["data"]["validation"] == sum(1 for _ in sample_dir.rglob("*.jpg"))
    assert len(card["history"]) == card["epochs_run"] == 3
    assert set(card["metrics"]["after"]) == {"precision_at_1", "map_at_r"}
    # normalised softmax on four visually distinct classes: the loss falls
    assert card["history"][-1]["loss"] < card["history"][0]["loss"]
    assert "normsoftmax, λ = 20" in (trained / "MODEL.md").read_text()


def test_trained_model_is_a_backbone_through_onnx(trained: Path) -> None:
    model = create_model(str(trained))
    assert model.runtime == "onnx"
    assert model.config()["weights"] == file_hash(trained / "weights.pt")
    rng = np.random.default_rng(0)
    feats = model.features(rng.integers(0, 255, (3, RES, RES, 3), dtype=np.uint8))
    assert feats.shape == (3, 32, 1, 1)
    np.testing.assert_allclose(np.linalg.norm(feats[:, :, 0, 0], axis=1), 1.0, atol=1e-4)
    # ONNX Runtime and eager torch compute the same embedding
    torch_model = create_model(str(trained), runtime="torch")
    x = rng.integers(0, 255, (2, RES, RES, 3), dtype=np.uint8)
    np.testing.assert_allclose(model.features(x), torch_model.features(x), atol=1e-4)


def test_index_with_trained_model(trained: Path, sample_dir: Path, sample_queries: Path, tmp_path: Path) -> None:
    from lookalike import Index

    index = Index.build(sample_dir, tmp_path / "idx", model=str(trained))
    meta = index.store.meta
    assert meta["model"]["name"] == str(trained.resolve())
    assert meta["model"]["weights"] == file_hash(trained / "weights.pt")
    assert meta["pooling"]["name"] == "mean" and meta["dim"] == 32 and meta["resolution"] == RES
    for query in sorted(sample_queries.glob("*.jpg")):
        assert index.search(query, k=1)[0].label == query.stem
    # re-running with the same folder (another spelling of its path) updates instead of refusing
    again = Index.build(sample_dir, tmp_path / "idx", model=str(trained / ".." / trained.name))
    assert again.report.unchanged == len(index.store)


def test_trained_model_runs_cached_without_building_torch_and_quantizes(
    trained: Path, sample_dir: Path, sample_queries: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lookalike.models import registry

    monkeypatch.setattr(registry, "int8_pays", lambda: True)  # int8 is the default on CPUs with VNNI
    from lookalike import Index

    create_model(str(trained))  # the export is cached from here on
    model = create_model(str(trained))
    model.features(np.zeros((1, RES, RES, 3), np.uint8))
    assert model._module is None  # found and ran the export by the weights' hash: no torch module was built
    fp32 = Index.build(sample_dir, tmp_path / "fp32", model=str(trained), precision="fp32")
    int8 = Index.build(sample_dir, tmp_path / "int8", model=str(trained))  # int8 is the default for trained models too
    assert int8.store.meta["precision"] == "int8" and int8.describer.model.int8_ready
    assert int8.names == fp32.names
    cos = np.sum(fp32.vectors * int8.vectors, axis=1)
    assert np.median(cos) > 0.95 and cos.min() < 0.99999  # close, and really two precisions
    for query in sorted(sample_queries.glob("*.jpg")):
        assert int8.search(query, k=1)[0].label == query.stem


@pytest.mark.parametrize("loss", ["triplet", "arcface"])
def test_other_losses_make_valid_models(loss: str, sample_dir: Path, tmp_path: Path) -> None:
    result = train(sample_dir, tmp_path / loss, _opts(loss=loss, epochs=1, miner="hard"))
    assert result.epochs_run == 1 and len(result.classes) == 4
    card = json.loads((tmp_path / loss / "model.json").read_text())
    assert card["loss"] == loss
    assert card["margin"] == (0.2 if loss == "triplet" else 28.6)
    assert create_model(str(tmp_path / loss), runtime="torch").features(np.zeros((1, RES, RES, 3), np.uint8)).shape == (
        1,
        32,
        1,
        1,
    )


def test_fine_tuning_last_block(sample_dir: Path, tmp_path: Path) -> None:
    result = train(sample_dir, tmp_path / "ft", _opts(unfreeze=1, epochs=1))
    assert result.epochs_run == 1
    assert json.loads((tmp_path / "ft" / "model.json").read_text())["frozen_seconds"] > 0
    base = create_model("efficientnet-lite0", runtime="torch").module.module.net
    tuned = create_model(str(tmp_path / "ft"), runtime="torch").module.module.net
    changed = [
        not np.allclose(a.detach().numpy(), b.detach().numpy())
        for a, b in zip(base._blocks[-1].parameters(), tuned._blocks[-1].parameters(), strict=True)
    ]
    assert any(changed)  # the last block moved ...
    for a, b in zip(base._blocks[0].parameters(), tuned._blocks[0].parameters(), strict=True):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())  # ... the first did not


def test_random_crop_of_frozen_maps_is_a_window_of_each() -> None:
    from lookalike.training.data import random_crop

    rng = np.random.default_rng(0)
    maps = rng.standard_normal((6, 3, 12, 12)).astype(np.float16)
    assert random_crop(maps, 1.0, rng) is maps
    sizes = set()
    for _ in range(20):
        out = random_crop(maps, 0.5, rng)
        n, c, h, w = out.shape
        assert (n, c) == (6, 3) and h == w and 6 <= h <= 12
        sizes.add(h)
        for m, o in zip(maps, out, strict=True):  # each output is a contiguous window of its own map
            hits = [
                (y, x)
                for y in range(12 - h + 1)
                for x in range(12 - w + 1)
                if np.array_equal(m[:, y : y + h, x : x + w], o)
            ]
            assert hits
    assert len(sizes) > 2  # the window size varies from batch to batch


def kill_after_first_epoch(line: str) -> None:
    """A log callback that interrupts a run the way Ctrl-C would, right after its first checkpoint."""
    if line.startswith("epoch 1/"):
        raise KeyboardInterrupt


def test_killed_run_is_refused_then_resumes(sample_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"

    with pytest.raises(KeyboardInterrupt):
        train(sample_dir, out, _opts(epochs=2), log=kill_after_first_epoch)
    assert not (out / "complete").exists()
    with pytest.raises(ModelUnavailableError, match="unfinished training run"):
        create_model(str(out))
    with pytest.raises(LookalikeError, match="other options"):
        train(sample_dir, out, _opts(epochs=2, loss="triplet"))
    lines: list[str] = []
    result = train(sample_dir, out, _opts(epochs=2), log=lines.append)
    assert result.resumed_from == 1 and result.epochs_run == 2
    assert any("resuming" in line for line in lines)
    assert [h["epoch"] for h in json.loads((out / "model.json").read_text())["history"]] == [1, 2]
    with pytest.raises(LookalikeError, match="already holds a trained model"):
        train(sample_dir, out, _opts(epochs=1))
    with pytest.raises(LookalikeError, match="nothing to resume"):
        train(sample_dir, tmp_path / "fresh", _opts(epochs=1), resume=True)


def _same(a: object, b: object, path: str = "") -> None:
    """Nested checkpoint parts (dicts, lists, tensors, numbers) are equal, bit for bit; timings are ignored."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), path
    elif isinstance(a, dict):
        keys = {k for k in a if k != "seconds"}
        assert keys == {k for k in b if k != "seconds"}, path
        for k in keys:
            _same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def _keep_checkpoints(out: Path, kept: dict[int, dict], kill_after: int | None = None):  # noqa: ANN202
    """A log callback keeping a copy of the checkpoint written at the end of every epoch (and killing the run)."""
    import torch

    def log(line: str) -> None:
        if line.startswith("epoch "):
            epoch = int(line.split()[1].split("/")[0])
            kept[epoch] = torch.load(out / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
            if epoch == kill_after:
                raise KeyboardInterrupt

    return log


def test_resumed_run_restores_weights_and_optimizer_and_ends_like_an_uninterrupted_run(
    sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: a killed run resumes. Resuming must bring back the weights, the loss's weights and Adam's moments,
    and then (training on CPU with a fixed seed is deterministic) end exactly where an uninterrupted run ends."""
    import copy

    import torch
    import torch.optim.optimizer as optim_hooks

    import lookalike.training.loop as train_mod

    opts = _opts(epochs=3, batch_size=8, patience=9)  # 2 of the 4 classes per batch: which ones is drawn
    whole: dict[int, dict] = {}
    train(sample_dir, tmp_path / "whole", opts, log=_keep_checkpoints(tmp_path / "whole", whole))
    killed: dict[int, dict] = {}
    with pytest.raises(KeyboardInterrupt):
        train(sample_dir, tmp_path / "run", opts, log=_keep_checkpoints(tmp_path / "run", killed, kill_after=1))
    assert sorted(killed) == [1]
    _same(killed[1], whole[1], "epoch 1")  # --seed fixes split, initialisation and sampling: the same first epoch

    # what the resumed run holds when its first batch starts (before any forward pass moves BatchNorm's statistics)
    made: dict[str, object] = {}
    start: dict[str, object] = {}
    build, make_loss = train_mod.build_embedder, train_mod.make_loss

    def first_batch(module: object, args: object) -> None:
        if "model" not in start:
            start["model"] = copy.deepcopy(made["embedder"].state_dict())
            start["loss"] = copy.deepcopy(made["loss"].state_dict())

    def spy_build(*a: object, **kw: object) -> object:
        made["embedder"] = embedder = build(*a, **kw)
        embedder.head.register_forward_pre_hook(first_batch)
        return embedder

    def spy_loss(*a: object, **kw: object) -> tuple:
        made["loss"], miner = make_loss(*a, **kw)
        return made["loss"], miner

    def first_step(opt: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        start.setdefault("opt", copy.deepcopy(opt.state_dict()))

    monkeypatch.setattr(train_mod, "build_embedder", spy_build)
    monkeypatch.setattr(train_mod, "make_loss", spy_loss)
    handle = optim_hooks.register_optimizer_step_pre_hook(first_step)
    resumed: dict[int, dict] = {}
    try:
        result = train(sample_dir, tmp_path / "run", opts, log=_keep_checkpoints(tmp_path / "run", resumed))
    finally:
        handle.remove()
    assert result.resumed_from == 1 and sorted(resumed) == [2, 3]
    held = killed[1]
    assert held["opt"]["state"] and held["epoch"] == 1  # Adam has moments to lose
    _same(start["model"], held["model"], "model")
    _same(start["loss"], held["loss"], "loss")
    _same(start["opt"]["state"], held["opt"]["state"], "opt")
    # ... and the rest of the run is the uninterrupted one: every later checkpoint and the saved model
    for epoch in (2, 3):
        for part in ("model", "loss", "opt", "history", "best"):
            _same(resumed[epoch][part], whole[epoch][part], f"epoch {epoch} {part}")
    _same(
        torch.load(tmp_path / "run" / "weights.pt", weights_only=True),
        torch.load(tmp_path / "whole" / "weights.pt", weights_only=True),
    )


def test_best_epoch_is_kept_and_training_stops_after_patience(
    sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: "The best epoch is kept; training stops after --patience epochs without improvement". Validation
    is scripted (best at epoch 2) so the model saved must be epoch 2's, not the last one's."""
    import torch

    import lookalike.training.loop as train_mod

    real = train_mod.validation_metrics
    scripted = iter([0.3, 0.9, 0.5, 0.7])  # validation precision@1 of epochs 1..4; epoch 2 is best
    calls: list[dict[str, float]] = []

    def metrics(*args: object) -> dict[str, float]:
        got = real(*args)
        calls.append(got)
        if len(calls) == 1:  # "before" (the untrained backbone)
            return got
        p = next(scripted, None)
        return got if p is None else {"precision_at_1": p, "map_at_r": p}

    monkeypatch.setattr(train_mod, "validation_metrics", metrics)
    out = tmp_path / "m"
    kept: dict[int, dict] = {}
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        _keep_checkpoints(out, kept)(line)

    result = train(sample_dir, out, _opts(epochs=8, patience=2, lr=3e-3), log=log)
    assert result.best_epoch == 2 and result.epochs_run == 4  # epochs 3 and 4 did not improve: stop before 5
    assert sorted(kept) == [1, 2, 3, 4] and any(line.startswith("stopped early") for line in lines)
    card = json.loads((out / "model.json").read_text())
    assert card["best_epoch"] == 2 and card["epochs_run"] == 4 and len(card["history"]) == 4
    saved = torch.load(out / "weights.pt", weights_only=True)
    _same(saved, kept[2]["model"])  # the best epoch's weights ...
    assert not all(torch.equal(saved[k], kept[4]["model"][k]) for k in saved)  # ... not the last epoch's
    # the "after" metrics are measured on the kept weights: the real validation of epoch 2
    assert result.metrics["after"] == calls[2]


def test_restart_discards_an_unfinished_run_and_overwrite_replaces_a_model(sample_dir: Path, tmp_path: Path) -> None:
    """README: `--restart` discards an unfinished run (whatever its options); a finished model is replaced only
    with `--overwrite`, and a folder that is not a lookalike model is never emptied."""
    import torch
    from typer.testing import CliRunner

    from lookalike.cli import app

    out = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        train(sample_dir, out, _opts(epochs=2), log=kill_after_first_epoch)
    assert (out / "run" / "checkpoint.pt").is_file()
    args = ["train", str(sample_dir), "--out", str(out), "--resolution", str(RES), "--batch-size", "16", "-q"]
    run = CliRunner().invoke
    res = run(app, [*args, "--dim", "16", "--epochs", "1"])  # other options than the unfinished run's: refused
    assert isinstance(res.exception, LookalikeError) and "other options" in str(res.exception)
    res = run(app, [*args, "--dim", "16", "--epochs", "1", "--restart"])
    assert res.exit_code == 0, res.output
    card = json.loads((out / "model.json").read_text())
    assert card["embedding_dim"] == 16 and [h["epoch"] for h in card["history"]] == [1]
    assert not (out / "run").exists()
    first = torch.load(out / "weights.pt", weights_only=True)

    res = run(app, [*args, "--dim", "8", "--epochs", "1"])
    assert isinstance(res.exception, LookalikeError) and "already holds a trained model" in str(res.exception)
    assert json.loads((out / "model.json").read_text())["embedding_dim"] == 16  # untouched
    res = run(app, [*args, "--dim", "8", "--epochs", "1", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "model.json").read_text())["embedding_dim"] == 8 and (out / "complete").is_file()
    assert torch.load(out / "weights.pt", weights_only=True).keys() == first.keys()
    assert create_model(str(out)).feature_dim == 8
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["complete", "model.json", "MODEL.md", "weights.pt", "curves.png", "tsne.png"]
    )

    (out / "notes.txt").write_text("mine")  # not a file lookalike writes: --overwrite must not delete the folder
    res = run(app, [*args, "--overwrite"])
    assert isinstance(res.exception, LookalikeError) and "not empty" in str(res.exception)
    assert (out / "notes.txt").read_text() == "mine" and (out / "complete").is_file()


def test_frozen_feature_cache_is_reused_and_keyed_by_file_weights_and_resolution(
    sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: backbone features are computed once and cached, keyed by file, size, mtime, weights and
    resolution: the same inputs decode nothing, a changed file or setting is described again."""
    import lookalike.models.base as base
    import lookalike.training.cache as train_mod
    from lookalike.embed import Describer
    from lookalike.models.efficientnet import weights_file
    from lookalike.training import pooled_features

    monkeypatch.setattr(train_mod, "cache_dir", lambda: tmp_path / "cache")
    described: list[Path] = []
    real = Describer.describe_files

    def spy(self: Describer, files: list[Path], *args: object, **kwargs: object):  # noqa: ANN202
        described.extend(files)
        return real(self, files, *args, **kwargs)

    monkeypatch.setattr(Describer, "describe_files", spy)
    data = tmp_path / "data"
    shutil.copytree(sample_dir, data)
    paths = sorted(data.rglob("*.jpg"))

    first, bad = pooled_features(paths, "efficientnet-lite0", RES)
    assert described == paths and bad == [] and np.isfinite(first).all()
    assert [p.name for p in (tmp_path / "cache" / "train-features").iterdir()] != []
    described.clear()
    again, _ = pooled_features(paths, "efficientnet-lite0", RES)
    assert described == [] and np.array_equal(again, first)  # same inputs: read from the cache
    train(data, tmp_path / "m", _opts(epochs=1))  # a training run on the same folder reads them too
    assert described == []

    touched = paths[3]
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, new mtime
    again, _ = pooled_features(paths, "efficientnet-lite0", RES)
    assert described == [touched] and np.allclose(again, first, atol=1e-5)
    described.clear()
    shutil.copy(paths[0], paths[5])  # other content, other size
    again, _ = pooled_features(paths, "efficientnet-lite0", RES)
    assert described == [paths[5]] and np.allclose(again[5], first[0], atol=1e-5)
    described.clear()

    other_res, _ = pooled_features(paths, "efficientnet-lite0", RES + 32)  # another resolution: all again
    assert described == paths and not np.allclose(other_res, again, atol=1e-3)
    described.clear()
    real_hash, weights = base.file_hash, weights_file("lite0")
    monkeypatch.setattr(base, "file_hash", lambda p: "0" * 32 if str(p) == weights else real_hash(p))
    pooled_features(paths, "efficientnet-lite0", RES)  # other weights (their hash): all again
    assert described == paths


def test_cosine_schedule_decays_the_rate_and_a_resumed_run_continues_it(sample_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cos"

    with pytest.raises(KeyboardInterrupt):
        train(sample_dir, out, _opts(epochs=3, schedule="cosine", lr=1e-3), log=kill_after_first_epoch)
    train(sample_dir, out, _opts(epochs=3, schedule="cosine", lr=1e-3, patience=9))
    lrs = [h["lr"] for h in json.loads((out / "model.json").read_text())["history"]]
    np.testing.assert_allclose(lrs, [1e-3, 1e-3 * 0.505, 1e-5], rtol=1e-6)  # full, half way, 1/100 at the end
    train(sample_dir, tmp_path / "const", _opts(epochs=2, lr=1e-3, patience=9))
    lrs = [h["lr"] for h in json.loads((tmp_path / "const" / "model.json").read_text())["history"]]
    assert lrs == [1e-3, 1e-3]


def test_members_are_one_model_whose_embedding_joins_theirs(sample_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ens"
    result = train(sample_dir, out, _opts(members=2, unfreeze=1, epochs=1))
    assert [r.out.name for r in result.members] == ["seed0", "seed1"]
    card = json.loads((out / "model.json").read_text())
    assert card["embedding_dim"] == 64 and card["members"] == ["members/seed0", "members/seed1"]
    assert "2 members" in (out / "MODEL.md").read_text()
    seeds = [json.loads((out / m / "model.json").read_text())["options"]["seed"] for m in card["members"]]
    assert seeds == [0, 1]

    model = create_model(str(out))
    assert model.runtime == "onnx" and model.feature_dim == 64
    n_blocks = len(model.module.module.members[0].net._blocks)
    assert model.module.module.shared == n_blocks - 1  # the untouched blocks run once for both members
    x = np.random.default_rng(1).integers(0, 255, (3, RES, RES, 3), dtype=np.uint8)
    joint = model.features(x)[:, :, 0, 0]
    parts = [create_model(str(out / m)).features(x)[:, :, 0, 0] for m in card["members"]]
    assert not np.allclose(parts[0], parts[1], atol=1e-3)  # other seeds, other members
    np.testing.assert_allclose(joint, np.concatenate(parts, axis=1) / np.sqrt(2), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(joint, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(create_model(str(out), runtime="torch").features(x)[:, :, 0, 0], joint, atol=1e-4)
    assert model.config()["weights"] != create_model(str(out / "members" / "seed0")).config()["weights"]


def test_killed_members_run_keeps_finished_members_and_resumes(sample_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ens"
    seen: list[str] = []

    def kill_in_second_member(line: str) -> None:
        seen.append(line)
        if line.startswith("epoch 1/") and any(s.startswith("member 2/") for s in seen):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(sample_dir, out, _opts(members=2, epochs=2), log=kill_in_second_member)
    assert (out / "members" / "seed0" / "complete").exists() and not (out / "complete").exists()
    with pytest.raises(ModelUnavailableError, match="unfinished training run"):
        create_model(str(out))
    with pytest.raises(LookalikeError, match="other options"):
        train(sample_dir, out, _opts(members=2, epochs=2, loss="triplet"))
    # a member written before an option existed (absent from its card) counts as having had the default
    card_path = out / "members" / "seed0" / "model.json"
    old = json.loads(card_path.read_text())
    del old["options"]["members"], old["options"]["schedule"]
    card_path.write_text(json.dumps(old))
    lines: list[str] = []
    result = train(sample_dir, out, _opts(members=2, epochs=2), log=lines.append, resume=True)
    assert "member 1/2 (seed 0) already trained" in lines and any("resuming" in s for s in lines)
    assert result.members[1].resumed_from == 1 and (out / "complete").exists()
    assert create_model(str(out)).feature_dim == 64
    with pytest.raises(LookalikeError, match="members must be"):
        train(sample_dir, tmp_path / "x", _opts(members=0))


def test_drop_suspects_leaves_out_a_photo_filed_under_the_wrong_class(sample_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(sample_dir, data)
    a, b = sorted(p.name for p in data.iterdir())[:2]
    shutil.copy(next((data / a).glob("*.jpg")), data / b / "misfiled.jpg")
    result = train(data, tmp_path / "m", _opts(epochs=1, drop_suspects=0.3))
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert [(Path(s["path"]).name, s["label"], s["predicted"]) for s in card["data"]["suspects"]] == [
        ("misfiled.jpg", b, a)
    ]
    assert result.n_train + result.n_val == card["data"]["images"] == 24  # the 24 correctly filed photos
    with pytest.raises(LookalikeError, match="drop_suspects"):
        train(data, tmp_path / "m2", _opts(drop_suspects=1.0))


def test_bad_inputs(sample_dir: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    shutil.copytree(sample_dir / "temple", one / "temple")
    with pytest.raises(LookalikeError, match="at least two classes"):
        train(one, tmp_path / "m1", _opts())
    assert not (tmp_path / "m1").exists()

    singles = tmp_path / "singles"
    for cls in ("temple", "flower"):
        (singles / cls).mkdir(parents=True)
        shutil.copy(next((sample_dir / cls).glob("*.jpg")), singles / cls)
    with pytest.raises(LookalikeError, match="two or more images"):
        train(singles, tmp_path / "m2", _opts())

    with pytest.raises(LookalikeError, match="no labelled training images"):
        train(tmp_path / "singles" / "temple", tmp_path / "m3", _opts())

    with pytest.raises(LookalikeError, match="unknown loss"):
        train(sample_dir, tmp_path / "m4", _opts(loss="contrastive"))
    with pytest.raises(LookalikeError, match=r"unfreeze must be 0\.\.10 for efficientnet-lite0"):
        train(sample_dir, tmp_path / "m5", _opts(unfreeze=11))
    with pytest.raises(LookalikeError, match="crop must be between"):
        train(sample_dir, tmp_path / "m6", _opts(unfreeze=1, crop=0.1))
    with pytest.raises(LookalikeError, match="schedule must be constant or cosine"):
        train(sample_dir, tmp_path / "m7", _opts(schedule="step"))

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(LookalikeError, match="not empty"):
        train(sample_dir, foreign, _opts())


def test_unreadable_images_and_single_image_classes_are_reported(sample_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(sample_dir, data)
    (data / "temple" / "broken.jpg").write_bytes(b"not a jpeg")
    (data / "flower" / "empty.jpg").write_bytes(b"")
    (data / "lonely").mkdir()
    shutil.copy(next((sample_dir / "temple").glob("*.jpg")), data / "lonely" / "one.jpg")
    result = train(data, tmp_path / "m", _opts(epochs=1))
    assert sorted(Path(p).name for p, _ in result.skipped) == ["broken.jpg", "empty.jpg"]
    assert result.dropped_classes == ["lonely"] and "lonely" not in result.classes
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert len(card["data"]["skipped"]) == 2 and card["data"]["dropped_classes"] == ["lonely"]


def test_model_folder_from_another_version_or_half_written(trained: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    card = json.loads((other / "model.json").read_text())
    card["format_version"] = 99
    (other / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelUnavailableError, match="version 99"):
        create_model(str(other))
    (other / "complete").unlink()
    with pytest.raises(ModelUnavailableError, match="half-written"):
        create_model(str(other))
    with pytest.raises(ModelUnavailableError, match="not a model folder"):
        create_model(str(tmp_path))


def test_cli_train_one_line_error(tmp_path: Path, sample_dir: Path) -> None:
    import subprocess
    import sys

    one = tmp_path / "one"
    shutil.copytree(sample_dir / "flower", one / "flower")
    cmd = [
        sys.executable,
        "-c",
        "from lookalike.cli import main; main()",
        "train",
        str(one),
        "--out",
        str(tmp_path / "m"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "at least two classes" in proc.stderr


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists() or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_fine_tuning_keeps_freed_buffers_then_returns_them() -> None:
    from lookalike.training.loop import keep_freed_memory

    def big_and_freed() -> tuple[float, float]:
        a = np.ones(200 * 2**20 // 8)  # 200 MB: glibc would mmap it, and unmap it again on free
        with_it = _rss_mb()
        del a
        return with_it, _rss_mb()

    with_it, after = big_and_freed()
    assert with_it - after > 150  # default: handed back at once
    with keep_freed_memory():
        with_it, after = big_and_freed()
        assert with_it - after < 50  # kept for the next step's buffers
        kept = after
    assert kept - _rss_mb() > 150  # and returned when fine-tuning ends
