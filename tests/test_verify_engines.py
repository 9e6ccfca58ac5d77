"""Local features and verification on Ray equal the local run (byte-equal feature files, identical verdicts), and
verification of undecided pairs only gives the verdicts of verifying everything for the pairs it verifies."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.cluster import GraphParams, cluster_index
from lookalike.cluster.run import Decided, _verdicts
from lookalike.index import Index
from lookalike.samples import make_views
from lookalike.store import FEATURES_DIR
from lookalike.verify import FeatureCache, Features, MatchConf, verify_pairs
from lookalike.verify.local_features import extract_files
from lookalike.verify.pairs import verify_files

HAS_RAY = importlib.util.find_spec("ray") is not None


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = make_views(tmp_path_factory.mktemp("engines") / "photos", per_source=3, size=360)
    (out / "blank").mkdir()
    Image.new("RGB", (300, 200), (200, 200, 200)).save(out / "blank" / "blank.png")  # too flat: unknown
    (out / "blank" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")  # skipped by indexing
    return out


@pytest.fixture(scope="module")
def index_dir(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("engines-index") / "idx"
    Index.build(photos, path)
    return path


def copy_of(index_dir: Path, to: Path) -> Index:
    shutil.copytree(index_dir, to, ignore=shutil.ignore_patterns(FEATURES_DIR))
    return Index.open(to)


def test_feature_files_are_the_same_bytes_whenever_made(photos: Path) -> None:
    from lookalike.verify import extract

    f = extract(Image.open(next(photos.glob("temple/*"))))
    data = f.to_bytes()
    assert data == extract(Image.open(next(photos.glob("temple/*")))).to_bytes()
    import io

    back = Features.load(io.BytesIO(data))
    np.testing.assert_array_equal(back.sift, f.sift)
    np.testing.assert_array_equal(back.xy, f.xy)
    assert back.size == f.size


def test_the_remote_units_of_work_give_the_local_results(index_dir: Path, tmp_path: Path) -> None:
    """What a Ray task runs (extract_files, verify_files) on plain arguments = what the local threads compute."""
    idx = copy_of(index_dir, tmp_path / "ix")
    cache = idx.features
    cache.ensure()
    items = [(i, str(idx.root / n), n) for i, n in enumerate(idx.names)]
    for i, data, error in extract_files(items, cache.conf.to_dict()):
        assert data == cache.file_of(cache.hashes[i]).read_bytes() and error == ""
    a, b = np.triu_indices(len(idx), 1)
    local = verify_pairs(cache, a, b)
    files = {i: str(cache.file_of(h)) for i, h in enumerate(cache.hashes)}
    batch = [(p, int(i), int(j)) for p, (i, j) in enumerate(zip(a, b, strict=True))]
    remote, counts = verify_files(batch, files, MatchConf().to_dict())
    assert [(s, n, m) for _, s, n, m in remote] == [(v.status, v.inliers, v.matches) for v in local]
    assert counts == {i: c for i, c in cache.counts.items()}


@pytest.mark.skipif(not HAS_RAY, reason='Ray is not installed (pip install "lookalike[ray]")')
def test_ray_features_and_verification_equal_local(index_dir: Path, tmp_path: Path) -> None:
    from lookalike.distributed import RayFeatureEngine

    local = copy_of(index_dir, tmp_path / "local")
    local.local_features()
    local_result = cluster_index(local, match=True, save=False, params=GraphParams(k=5))
    local_pairs = local.pairs(5, verify=True)

    remote = copy_of(index_dir, tmp_path / "ray")
    with RayFeatureEngine(num_workers=2, chunk=3) as engine:  # a local 2-worker Ray, stopped at the end
        remote.local_features(engine=engine)
        folder = remote.folder / FEATURES_DIR
        assert sorted(p.name for p in folder.glob("*.npz")) == sorted(
            p.name for p in (local.folder / FEATURES_DIR).glob("*.npz")
        )
        for p in folder.glob("*.npz"):
            assert p.read_bytes() == (local.folder / FEATURES_DIR / p.name).read_bytes(), p.name
        result = cluster_index(remote, match=True, save=False, params=GraphParams(k=5), engine=engine)
        remote_pairs = remote.pairs(5, verify=True, engine=engine)
    assert [(p.a, p.b, p.verdict) for p in remote_pairs] == [(p.a, p.b, p.verdict) for p in local_pairs]
    np.testing.assert_array_equal(result.labels, local_result.labels)
    assert result.unverifiable == local_result.unverifiable == ["blank/blank.png"]
    assert result.notes == local_result.notes


@pytest.mark.skipif(not HAS_RAY, reason='Ray is not installed (pip install "lookalike[ray]")')
def test_ray_computes_missing_features_while_verifying(index_dir: Path, tmp_path: Path) -> None:
    from lookalike.distributed import RayFeatureEngine

    local = copy_of(index_dir, tmp_path / "local")
    want = local.pairs(5, verify=True)
    remote = copy_of(index_dir, tmp_path / "ray")
    with RayFeatureEngine(num_workers=2) as engine:
        got = remote.pairs(5, verify=True, engine=engine)  # no features yet: the engine extracts them first
    assert [p.verdict for p in got] == [p.verdict for p in want]


def test_skipping_decided_pairs_keeps_the_verdicts_of_the_pairs_it_verifies(index_dir: Path, tmp_path: Path) -> None:
    idx = copy_of(index_dir, tmp_path / "ix")
    from lookalike.search import knn_graph

    ids, scores = knn_graph(idx.vectors, 5)
    conf = MatchConf()
    all_notes: list[str] = []
    every, _ = _verdicts(idx, ids, scores, conf, None, None, False, all_notes)
    # thresholds that decide some pairs either way
    s = np.sort(scores[ids >= 0])
    decided = Decided(far=float(s[len(s) // 4]), copy=float(s[-len(s) // 8]))
    notes: list[str] = []
    idx2 = copy_of(index_dir, tmp_path / "ix2")
    some, _ = _verdicts(idx2, ids, scores, conf, None, None, False, notes, decided=decided)
    undecided = (scores >= decided.far) & (scores < decided.copy) & (ids >= 0)
    np.testing.assert_array_equal(some[undecided], every[undecided])
    assert (some[(scores < decided.far) & (ids >= 0)] == -1).all()
    assert (some[(scores >= decided.copy) & (ids >= 0)] == 1).all()
    assert any(n.startswith("decided by cosine") for n in notes)
    # features only for the photos of the undecided pairs
    kept = {
        idx2.store.column("hash")[int(x)] for x in np.unique(np.concatenate([np.nonzero(undecided)[0], ids[undecided]]))
    }
    cached = {p.stem for p in (idx2.folder / FEATURES_DIR).glob("*.npz")}
    assert cached == kept


def test_cluster_skip_decided_groups_the_views(index_dir: Path, tmp_path: Path) -> None:
    idx = copy_of(index_dir, tmp_path / "ix")
    result = cluster_index(idx, match=True, save=False, params=GraphParams(k=5), skip_decided=True)
    names = idx.names
    for src in ("temple", "portrait", "flower", "package"):
        labs = {result.labels[i] for i, n in enumerate(names) if n.startswith(src + "/")}
        assert len(labs) == 1 and -1 not in labs
    assert any(n.startswith("decided by cosine") for n in result.notes)


def test_feature_cache_keeps_its_engine_only_when_given(index_dir: Path, tmp_path: Path) -> None:
    idx = copy_of(index_dir, tmp_path / "ix")
    assert idx.feature_cache().engine is None
    marker = object()
    assert FeatureCache(idx.store, engine=marker).engine is marker  # type: ignore[arg-type]


def test_cli_engine_and_skip_decided(index_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lookalike.cli import app

    runner = CliRunner()
    ix = tmp_path / "ix"
    copy_of(index_dir, ix)
    bad = runner.invoke(app, ["features", "--index", str(ix), "--engine", "spark", "--quiet"])
    assert bad.exit_code != 0 and "--engine must be one of local, ray" in str(bad.exception)
    ok = runner.invoke(app, ["cluster", "--index", str(ix), "--verify", "--skip-decided", "-k", "5", "--quiet"])
    assert ok.exit_code == 0, ok.output
    assert "decided by cosine" in ok.output


def test_reduced_decoding_is_a_stored_setting_and_keeps_the_picture_upright(tmp_path: Path, photos: Path) -> None:
    import io
    import json

    from lookalike.verify import FeatureConf
    from lookalike.verify.local_features import features_of_file, reduced_grey

    assert "decode" not in FeatureConf().to_dict()  # existing conf.json files and packs stay valid
    assert FeatureConf(decode="reduced").to_dict()["decode"] == "reduced"
    with pytest.raises(Exception, match="decode must be one of pillow, reduced"):
        FeatureConf(decode="magic")
    src = Image.open(next(photos.glob("temple/*"))).convert("RGB").resize((1600, 1200))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90°: portrait
    buf = io.BytesIO()
    src.save(buf, "JPEG", quality=92, exif=exif.tobytes())
    (tmp_path / "rot.jpg").write_bytes(buf.getvalue())
    src.save(tmp_path / "same.png")
    grey = reduced_grey(buf.getvalue(), 512)
    assert grey is not None and grey.shape == (512, 384)  # upright, long side 512 (decoded at 1/2, then resized)
    conf = FeatureConf(resolution=512, decode="reduced")
    reduced, _ = features_of_file(tmp_path / "rot.jpg", "rot.jpg", conf)
    pillow, _ = features_of_file(tmp_path / "rot.jpg", "rot.jpg", FeatureConf(resolution=512))
    assert reduced is not None and pillow is not None
    assert reduced.size == pillow.size == (384, 512) and len(reduced) > 100
    png, _ = features_of_file(tmp_path / "same.png", "same.png", conf)  # not a JPEG: the Pillow path
    assert png is not None and png.size == (512, 384)
    assert reduced_grey(b"not a jpeg", 512) is None
    # stored with the features, read back, and a change recomputes
    ix = tmp_path / "ix"
    Index.build(photos, ix)
    idx = Index.open(ix)
    idx.local_features(decode="reduced")
    assert json.loads((ix / FEATURES_DIR / "conf.json").read_text())["decode"] == "reduced"
    assert Index.open(ix).features.conf.decode == "reduced"
