"""AnyLoc-style descriptors: VLAD (hard/soft, masks, vocabularies), PCA-whitening, their life in an index, DINOv2."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike import Index
from lookalike.aggregate import (
    PCAWhitening,
    VLADPooling,
    l2_normalize,
    make_pooling,
    make_post,
    read_vocabulary,
)
from lookalike.errors import IndexMismatchError, LookalikeError, ModelUnavailableError

# --- VLAD ------------------------------------------------------------------------------------------------------


def _reference_vlad(features: np.ndarray, centres: np.ndarray, soft: bool, alpha: float) -> np.ndarray:
    """Textbook VLAD, one descriptor at a time, to check the vectorised one against."""
    n, c = features.shape[:2]
    out = []
    for i in range(n):
        v = np.zeros_like(centres, dtype=np.float64)
        for x in features[i].reshape(c, -1).T:
            x = x / np.linalg.norm(x)
            sims = centres @ x
            if soft:
                a = np.exp(alpha * (sims - sims.max()))
                a /= a.sum()
            else:
                a = np.eye(len(centres))[np.argmax(sims)]
            v += a[:, None] * (x[None] - centres)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        v = np.where(norms > 0, v / np.maximum(norms, 1e-12), 0)
        out.append(v.ravel() / np.linalg.norm(v))
    return np.array(out)


@pytest.fixture
def clustered() -> tuple[np.ndarray, np.ndarray]:
    """Local descriptors around 4 known directions, as (N, C, h, w) features and the true centres."""
    rng = np.random.default_rng(0)
    centres = l2_normalize(rng.normal(size=(4, 16)))
    ids = rng.integers(0, 4, size=(6, 3, 5))
    feats = centres[ids] + 0.05 * rng.normal(size=(6, 3, 5, 16))
    return feats.transpose(0, 3, 1, 2).astype(np.float32), centres


@pytest.mark.parametrize("soft", [False, True])
def test_vlad_matches_textbook_definition(clustered: tuple[np.ndarray, np.ndarray], soft: bool) -> None:
    feats, _ = clustered
    pooling = VLADPooling(clusters=4, soft=soft, alpha=5.0)
    pooling.fit(feats.transpose(0, 2, 3, 1).reshape(-1, 16))
    got = pooling.transform(feats)
    want = _reference_vlad(feats, pooling.centres, soft, 5.0)
    assert got.shape == (6, 4 * 16) == (6, pooling.output_dim(16))
    np.testing.assert_allclose(got, want, atol=1e-5)
    blocks = np.linalg.norm(got.reshape(6, 4, 16), axis=2)
    # intra-normalised: every used cluster contributes a block of equal norm
    assert np.all((np.abs(blocks - blocks.max(axis=1, keepdims=True)) < 1e-5) | (blocks < 1e-6))


def test_vlad_fit_finds_the_clusters(clustered: tuple[np.ndarray, np.ndarray]) -> None:
    feats, centres = clustered
    pooling = VLADPooling(clusters=4).fit(feats.transpose(0, 2, 3, 1).reshape(-1, 16))
    # each true direction has a fitted centre within a small angle
    assert (pooling.centres @ centres.T).max(axis=0).min() > 0.99


def test_vlad_ignores_letterbox_padding(clustered: tuple[np.ndarray, np.ndarray]) -> None:
    feats, _ = clustered
    pooling = VLADPooling(clusters=4, soft=True).fit(feats.transpose(0, 2, 3, 1).reshape(-1, 16))
    padded = feats.copy()
    padded[:, :, 2:, :] = 7.0  # garbage in the padded rows
    padded[:, :, :, 4:] = -3.0
    cells = np.array([[2, 4]] * len(feats))
    np.testing.assert_allclose(
        pooling.transform(padded, cells), pooling.transform(np.ascontiguousarray(feats[:, :, :2, :4])), atol=1e-6
    )
    grids = pooling.assign(padded, cells)
    assert all(g.shape == (2, 4) and g.max() < 4 for g in grids)


def test_vlad_vocabulary_roundtrip_and_errors(clustered: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    feats, _ = clustered
    with pytest.raises(LookalikeError, match="vocabulary missing"):
        VLADPooling(4).transform(feats)
    pooling = VLADPooling(4, soft=True).fit(feats.transpose(0, 2, 3, 1).reshape(-1, 16))
    path = pooling.save(tmp_path / "domain.npz")
    centres, config = read_vocabulary(path)
    assert config["clusters"] == 4 and np.array_equal(centres, pooling.centres)
    again = make_pooling(pooling.config())
    (tmp_path / "empty").mkdir()
    assert again.load(tmp_path / "empty").needs_fit  # an index folder without vocab.npz leaves it unfitted
    np.testing.assert_array_equal(again.load(path).transform(feats), pooling.transform(feats))
    with pytest.raises(LookalikeError, match="clusters"):
        VLADPooling(8).load(path)
    with pytest.raises(LookalikeError, match="16-dim"):
        pooling.transform(np.ones((1, 8, 2, 2), np.float32))
    with pytest.raises(LookalikeError, match="cannot fit"):
        VLADPooling(64).fit(np.ones((10, 16), np.float32))
    (tmp_path / "bad.npz").write_bytes(b"not numpy")
    with pytest.raises(LookalikeError, match="not a lookalike VLAD vocabulary"):
        read_vocabulary(tmp_path / "bad.npz")


# --- PCA-whitening -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, d", [(200, 20), (30, 100)])  # covariance path and Gram path (more dims than images)
def test_pca_whitening_whitens(n: int, d: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, d)) * np.linspace(5, 0.5, d) + rng.normal(size=d)
    pca = PCAWhitening(dim=10, power=0.5, shrink=0.0).fit(x)  # textbook whitening: identity covariance
    y = pca.transform(x)
    assert y.shape == (n, 10) and pca.output_dim(d) == 10
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(10), atol=1e-3)
    # the default partial whitening keeps the order of variances but narrows their spread
    var = np.var(PCAWhitening(dim=10).fit(x).transform(x), axis=0)
    raw = np.var(PCAWhitening(dim=10, power=0.0, shrink=0.0).fit(x).transform(x), axis=0)
    assert np.all(np.diff(var) <= 1e-9) and var[0] / var[-1] < raw[0] / raw[-1]
    pca.save(tmp_path)
    again = make_post(pca.config(), tmp_path)
    np.testing.assert_allclose(again.transform(x), y, atol=1e-5)


def test_pca_dimension_is_capped_by_rank() -> None:
    x = np.random.default_rng(2).normal(size=(5, 40))
    assert PCAWhitening(dim=512).fit(x).out == 4  # 5 centred points span 4 dimensions


# --- in an index -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vlad_index(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Index:
    return Index.build(
        sample_dir, tmp_path_factory.mktemp("vlad") / "idx", pooling={"name": "vlad", "clusters": 8}, pca=12
    )


def test_vlad_pca_index_describes_queries_like_its_images(vlad_index: Index, sample_queries: Path) -> None:
    meta = vlad_index.store.meta
    assert meta["pooling"]["name"] == "vlad" and meta["vocab"]["source"] == "fitted"
    assert meta["post"]["name"] == "pca-whiten" and meta["dim"] == 12 == vlad_index.vectors.shape[1]
    assert (vlad_index.store.path / "vocab.npz").is_file() and (vlad_index.store.path / "pca.npz").is_file()
    reopened = Index.open(vlad_index.store.path)
    v = reopened.embed([str(reopened.paths[3])])
    assert float(v[0] @ reopened.vectors[3]) > 0.999
    queries = sorted(sample_queries.glob("*.jpg"))
    results = reopened.search_many([str(q) for q in queries], k=3)
    hits = sum(m.label == q.stem for q, r in zip(queries, results, strict=True) for m in r.matches)
    assert hits >= 0.75 * 3 * len(queries)


def test_incremental_update_keeps_vocab_and_pca(vlad_index: Index, photos: Path, tmp_path: Path) -> None:
    idx = Index.build(photos, tmp_path / "idx", pooling={"name": "vlad", "clusters": 8}, pca=12)
    before = {n: (tmp_path / "idx" / n).read_bytes() for n in ("vocab.npz", "pca.npz")}
    new = photos / "temple" / "copy.jpg"
    shutil.copy(next((photos / "temple").glob("*.jpg")), new)
    idx = Index.build(photos, tmp_path / "idx", pooling={"name": "vlad", "clusters": 8}, pca=12)
    assert idx.report.added == 1 and idx.report.unchanged == len(idx) - 1
    assert before == {n: (tmp_path / "idx" / n).read_bytes() for n in before}
    i = idx.names.index("temple/copy.jpg")
    assert float(idx.embed([str(new)])[0] @ idx.vectors[i]) > 0.999
    with pytest.raises(IndexMismatchError):
        Index.build(photos, tmp_path / "idx", pooling={"name": "vlad", "clusters": 16})
    with pytest.raises(IndexMismatchError):
        Index.build(photos, tmp_path / "idx", pca=6)


def test_pca_on_fewer_than_two_images_stays_unwhitened_until_there_are_enough(sample_dir: Path, tmp_path: Path) -> None:
    """README: "An index built with --pca on fewer than 2 images stays un-whitened until it has enough"."""
    from lookalike.cli import app

    photos = tmp_path / "photos"
    (photos / "temple").mkdir(parents=True)
    temples = sorted((sample_dir / "temple").glob("*.jpg"))
    shutil.copy(temples[0], photos / "temple")
    res = CliRunner().invoke(app, ["index", str(photos), "--index", str(tmp_path / "idx"), "--pca", "4", "-q"])
    assert res.exit_code == 0, res.output  # no error: nothing to fit yet
    idx = Index.open(tmp_path / "idx")
    meta = idx.store.meta
    assert len(idx) == 1 and meta["pca"] == 4 and not meta.get("post")
    assert not (tmp_path / "idx" / "pca.npz").exists()
    assert meta["dim"] == 1280 and idx.vectors.shape == (1, 1280)  # the backbone's GeM vector, un-whitened
    np.testing.assert_allclose(idx.embed([str(temples[0])]), idx.vectors, atol=1e-4)
    assert len(idx.search(temples[1], k=3)) == 1  # queries are described like the stored vector

    for extra in temples[1:]:  # enough images now: the next update fits PCA-whitening and applies it to all
        shutil.copy(extra, photos / "temple")
    idx = Index.build(photos, tmp_path / "idx", pca=4)
    assert idx.report.added == len(temples) - 1 and idx.report.unchanged == 1
    meta = idx.store.meta
    assert (meta.get("post") or {}).get("name") == "pca-whiten"
    assert meta["dim"] == 4 and idx.vectors.shape == (len(temples), 4)
    assert (tmp_path / "idx" / "pca.npz").is_file()
    np.testing.assert_allclose(np.linalg.norm(idx.vectors, axis=1), 1.0, atol=1e-5)
    again = Index.open(tmp_path / "idx").embed([str(p) for p in idx.paths])
    np.testing.assert_allclose(np.sum(again * idx.vectors, axis=1), 1.0, atol=1e-3)  # the first image too


def test_saved_vocabulary_is_reused_across_indexes(vlad_index: Index, sample_dir: Path, tmp_path: Path) -> None:
    vocab = vlad_index.describer.pooling.save(tmp_path / "rooms-vocab.npz")
    other = Index.build(sample_dir, tmp_path / "other", pooling="vlad", vocab=vocab)
    assert other.store.meta["vocab"]["source"] == "given"
    assert other.store.meta["pooling"]["clusters"] == 8  # taken from the file
    assert other.describer.pooling.vocab_hash() == vlad_index.describer.pooling.vocab_hash()
    # a different vocabulary on an existing index needs --rebuild
    different = VLADPooling(8).fit(np.random.default_rng(0).normal(size=(100, 1280))).save(tmp_path / "x.npz")
    with pytest.raises(IndexMismatchError, match="another VLAD vocabulary"):
        Index.build(sample_dir, tmp_path / "other", vocab=different)
    with pytest.raises(LookalikeError, match="pooling vlad"):
        Index.build(sample_dir, tmp_path / "third", pooling="gem", vocab=vocab)


def test_cli_vocab_fit_refits_and_redescribes(sample_dir: Path, tmp_path: Path) -> None:
    from lookalike.cli import app

    runner = CliRunner()
    res = runner.invoke(
        app, ["index", str(sample_dir), "--index", str(tmp_path / "idx"), "--pooling", "vlad", "--clusters", "4", "-q"]
    )
    assert res.exit_code == 0, res.output
    assert Index.open(tmp_path / "idx").store.meta["dim"] == 4 * 1280
    res = runner.invoke(
        app, ["vocab", "fit", "--index", str(tmp_path / "idx"), "--clusters", "6", "--soft", "--out",
              str(tmp_path / "v.npz"), "-q"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    idx = Index.open(tmp_path / "idx")
    assert idx.store.meta["pooling"] == {"name": "vlad", "clusters": 6, "soft": True, "alpha": 20.0}
    assert idx.vectors.shape == (len(idx), 6 * 1280)
    assert read_vocabulary(tmp_path / "v.npz")[0].shape == (6, 1280)
    res = runner.invoke(
        app, ["plot", "vlad", str(idx.paths[0]), "--index", str(tmp_path / "idx"), "--out", str(tmp_path / "m.png")]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m.png").stat().st_size > 1000


def test_plot_vlad_needs_a_vlad_index(sample_index: Index, tmp_path: Path) -> None:
    from lookalike.plots import vlad_map

    with pytest.raises(LookalikeError, match="--pooling vlad"):
        vlad_map(sample_index, sample_index.paths[0], tmp_path / "m.png")


def test_vlad_flags_need_vlad() -> None:
    from lookalike.cli import pooling_spec

    assert pooling_spec("gem") == "gem"
    assert pooling_spec(None, 16) == {"name": "vlad", "clusters": 16, "soft": False}
    with pytest.raises(LookalikeError, match="VLAD options"):
        pooling_spec("mean", 16)


# --- DINOv2 hub backbones (random weights, never a download) ----------------------------------------------------


@pytest.fixture(scope="module")
def vits_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random ViT-S/14 saved as a checkpoint with the official key names."""
    import torch

    from lookalike.models.hub import build_vit

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hub") / "dinov2_vits14_pretrain.pth"
    torch.save(build_vit(384, 12, 6)().state_dict(), path)
    return path


def test_dinov2_state_dict_matches_official_layout() -> None:
    from lookalike.models.hub import build_vit

    state = build_vit(384, 12, 6)().state_dict()
    for key in ("cls_token", "mask_token", "patch_embed.proj.weight", "blocks.11.attn.qkv.weight",
                "blocks.0.ls1.gamma", "blocks.0.ls2.gamma", "blocks.0.mlp.fc2.bias", "norm.weight"):  # fmt: skip
        assert key in state
    assert tuple(state["pos_embed"].shape) == (1, 1370, 384)
    assert tuple(state["patch_embed.proj.weight"].shape) == (384, 3, 14, 14)
    assert len(state) == 5 + 12 * 14 + 2  # no head: the official pretrain files hold the backbone only


@pytest.mark.parametrize("facet", ["token", "key", "value"])
def test_dinov2_dense_features_at_stride_14(facet: str) -> None:
    from lookalike.models import create_model

    model = create_model("dinov2-vits14", random_weights=True, layer=None if facet == "token" else 5, facet=facet)
    assert model.stride == 14 and model.feature_dim == 384
    feats = model.features(np.random.default_rng(0).integers(0, 255, (2, 42, 70, 3), dtype=np.uint8))
    assert feats.shape == (2, 384, 3, 5) and np.isfinite(feats).all()


def test_dinov2_missing_weights_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lookalike.models import create_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ModelUnavailableError) as exc:
        create_model("dinov2-vitb14")
    msg = str(exc.value)
    assert "\n" not in msg and "--weights" in msg and "dinov2_vitb14_pretrain.pth" in msg
    with pytest.raises(ModelUnavailableError, match="not found"):
        create_model("dinov2-vits14", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(LookalikeError, match="layer"):
        create_model("dinov2-vits14", random_weights=True, layer=12)


def test_dinov2_wrong_checkpoint_is_refused(vits_weights: Path) -> None:
    from lookalike.models import create_model

    with pytest.raises(ModelUnavailableError, match="does not fit") as exc:
        create_model("dinov2-vitb14", weights=str(vits_weights))
    assert "\n" not in str(exc.value)


def test_dinov2_index_end_to_end(vits_weights: Path, sample_dir: Path, sample_queries: Path, tmp_path: Path) -> None:
    idx = Index.build(
        sample_dir, tmp_path / "idx", model="dinov2-vits14", weights=vits_weights, resolution=56,
        pooling={"name": "vlad", "clusters": 4}, pca=8,
    )  # fmt: skip
    assert idx.store.meta["model"]["weights_file"] == str(vits_weights.resolve())
    assert idx.store.meta["resolution"] == 56 and idx.vectors.shape == (len(idx), 8)
    assert idx.store.meta["precision"] == "fp32"  # eager torch only: the int8 default does not apply
    reopened = Index.open(tmp_path / "idx")  # finds the checkpoint again from the index's record
    assert float(reopened.embed([str(reopened.paths[0])])[0] @ reopened.vectors[0]) > 0.999
    assert len(reopened.search(next(sample_queries.glob("*.jpg")), k=3)) == 3
    with pytest.raises(LookalikeError, match="weights applies to hub models"):
        Index.build(sample_dir, tmp_path / "x", weights=vits_weights)
