"""Geometric verification: local features, matching + MAGSAC++, the feature cache in the index folder, verified
pairs, cluster --verify, search re-ranking, and the CLI — on perspective views made from the sample photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike.cli import app
from lookalike.cluster import GraphParams, cluster_index, graph_labels
from lookalike.index import Index, Match
from lookalike.samples import make_views
from lookalike.store import FEATURES_DIR, INDEX_FILES
from lookalike.verify import (
    MATCH,
    MIN_KEYPOINTS,
    NO_MATCH,
    UNKNOWN,
    FeatureCache,
    FeatureConf,
    MatchConf,
    extract,
    verify,
    verify_pairs,
)

runner = CliRunner()


@pytest.fixture(scope="session")
def views_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 perspective views of each of the 4 sample photos, plus a blank image (no keypoints)."""
    out = make_views(tmp_path_factory.mktemp("views") / "photos", per_source=3, size=360)
    (out / "blank").mkdir()
    Image.new("RGB", (300, 200), (200, 200, 200)).save(out / "blank" / "blank.png")
    return out


@pytest.fixture
def views(views_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "photos"
    shutil.copytree(views_dir, dst)
    return dst


@pytest.fixture(scope="session")
def views_index(views_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Index:
    return Index.build(views_dir, tmp_path_factory.mktemp("vindex") / "idx")


def feats(path: Path):  # noqa: ANN201
    return extract(Image.open(path))


# --- features and one pair ---------------------------------------------------------------------------------------


def test_features_are_bounded_and_rootsift_is_unit_length(views_dir: Path) -> None:
    f = extract(Image.open(views_dir / "temple" / "temple_00.jpg"), FeatureConf(max_keypoints=100, resolution=256))
    assert MIN_KEYPOINTS <= len(f) <= 100
    assert f.xy.max() <= 256  # keypoints lie in the image SIFT saw, long side bounded by the resolution
    assert max(f.size) == 256
    d = f.rootsift()
    assert d.shape == (len(f), 128)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1, atol=1e-3)
    assert f.rootsift(10).shape == (10, 128)


def test_views_of_one_picture_verify_and_other_pictures_do_not(views_dir: Path) -> None:
    a, b = feats(views_dir / "temple" / "temple_00.jpg"), feats(views_dir / "temple" / "temple_01.jpg")
    other = feats(views_dir / "portrait" / "portrait_00.jpg")
    same = verify(a, b)
    assert same.status == MATCH and same.inliers >= 100 and same.inlier_ratio > 0.5
    for geometry in ("fundamental", "homography"):
        assert verify(a, b, MatchConf(geometry=geometry)).verified
        diff = verify(a, other, MatchConf(geometry=geometry))
        assert diff.status == NO_MATCH and diff.inliers < 15


def test_shuffled_keypoint_positions_do_not_verify(views_dir: Path) -> None:
    """The descriptors still match, but without one consistent geometry nothing survives MAGSAC."""
    a, b = feats(views_dir / "temple" / "temple_00.jpg"), feats(views_dir / "temple" / "temple_01.jpg")
    b.xy = b.xy[np.random.default_rng(0).permutation(len(b))]
    v = verify(a, b)
    assert v.matches >= 100 and v.status == NO_MATCH


def test_flat_or_missing_images_are_unknown_never_a_match(views_dir: Path) -> None:
    blank = feats(views_dir / "blank" / "blank.png")
    tiny = extract(Image.open(views_dir / "temple" / "temple_00.jpg").resize((20, 16)))
    a = feats(views_dir / "temple" / "temple_00.jpg")
    assert len(blank) == 0
    assert verify(a, blank).status == UNKNOWN
    assert verify(blank, blank).status == UNKNOWN
    assert verify(a, tiny).status == UNKNOWN
    assert verify(a, None).status == UNKNOWN


def test_match_conf_checks_its_settings() -> None:
    from lookalike.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        MatchConf(min_inliers=2)
    assert e.value.setting == "min_inliers"
    with pytest.raises(ConfigError):
        MatchConf(geometry="affine")
    with pytest.raises(ConfigError):
        FeatureConf(max_keypoints=0)


# --- the cache in the index folder ----------------------------------------------------------------------------------


def test_cache_computes_only_what_is_missing_and_follows_content(views: Path, tmp_path: Path) -> None:
    index = Index.build(views, tmp_path / "idx")
    assert FEATURES_DIR in INDEX_FILES
    cache = FeatureCache(index.store)
    assert cache.ensure([0, 1]) == 2
    assert cache.ensure([0, 1, 2]) == 1  # only the one not cached
    assert FeatureCache(index.store).ensure() == len(index) - 3
    files = sorted((index.store.path / FEATURES_DIR).glob("*.npz"))
    assert len(files) == len(index)

    # a changed file gets new features, a deleted one's are dropped, an untouched one's kept
    names = index.names
    kept = index.store.path / FEATURES_DIR / f"{index.store.column('hash')[names.index('temple/temple_02.jpg')]}.npz"
    old_hash = index.store.column("hash")[names.index("temple/temple_00.jpg")]
    gone_hash = index.store.column("hash")[names.index("flower/flower_00.jpg")]
    Image.open(views / "portrait" / "portrait_00.jpg").save(views / "temple" / "temple_00.jpg")
    (views / "flower" / "flower_00.jpg").unlink()
    mtime = kept.stat().st_mtime_ns
    index = Index.build(views, tmp_path / "idx")
    present = {p.stem for p in (index.store.path / FEATURES_DIR).glob("*.npz")}
    assert old_hash not in present and gone_hash not in present
    assert kept.stat().st_mtime_ns == mtime
    assert index.features.missing() == [index.names.index("temple/temple_00.jpg")]


def test_corrupt_features_file_is_rebuilt_not_trusted(views: Path, tmp_path: Path) -> None:
    index = Index.build(views, tmp_path / "idx")
    cache = FeatureCache(index.store)
    cache.ensure([0])
    good = len(cache.get(0))
    path = cache.file_of(index.store.column("hash")[0])
    path.write_bytes(b"PK\x03\x04 not really a zip")
    fresh = FeatureCache(index.store)
    f = fresh.get(0)
    assert f is not None and len(f) == good
    assert any("recomputed" in n for n in fresh.notes)
    assert FeatureCache(index.store).get(0) is not None  # and the rebuilt file loads


def test_changed_feature_settings_recompute_everything(views: Path, tmp_path: Path) -> None:
    index = Index.build(views, tmp_path / "idx")
    index.local_features()
    assert index.features.conf == FeatureConf()
    cache = index.local_features(max_keypoints=64)
    assert cache.conf == FeatureConf(64, 1024)
    assert all(len(cache.get(i)) <= 64 for i in range(len(index)))
    assert Index.open(tmp_path / "idx").features.conf.max_keypoints == 64  # stored settings are followed


# --- many pairs, clustering, search ----------------------------------------------------------------------------------


def test_verify_pairs_in_parallel_agrees_with_one_by_one(views_index: Index) -> None:
    names = views_index.names
    a = [names.index("temple/temple_00.jpg"), names.index("temple/temple_00.jpg"), names.index("blank/blank.png")]
    b = [
        names.index("temple/temple_01.jpg"),
        names.index("portrait/portrait_00.jpg"),
        names.index("flower/flower_00.jpg"),
    ]
    cache = FeatureCache(views_index.store)
    got = verify_pairs(cache, a, b, workers=2)
    assert [v.status for v in got] == [MATCH, NO_MATCH, UNKNOWN]
    one = verify(cache.get(a[0]), cache.get(b[0]))
    assert got[0].inliers == one.inliers


def test_verified_pairs_are_all_same_picture(views_index: Index) -> None:
    notes: list[str] = []
    found = views_index.pairs(5, verify=True, notes=notes)
    kept = [p for p in found if p.verdict.verified]
    assert kept and all(p.name_a.split("/")[0] == p.name_b.split("/")[0] for p in kept)
    groups = {p.name_a.split("/")[0] for p in kept}
    assert groups == {"temple", "portrait", "flower", "package"}
    assert any("verified" in n for n in notes)


def test_verdicts_decide_edges_in_the_graph() -> None:
    """Two tight cosine groups joined by strong look-alike edges; verification refutes the bridge and confirms a
    low-cosine edge to an outlier."""
    ids = np.array([[1, 2], [0, 2], [1, 0], [4, 5], [3, 5], [4, 3], [0, 1]])
    scores = np.full(ids.shape, 0.9, np.float32)
    scores[2] = [0.9, 0.9]
    scores[6] = [0.1, 0.1]  # image 6: cosine far below any threshold
    params = GraphParams(k=2, strong=0.8, weak=0.7, local_ratio=0)
    bridge_ids = ids.copy()
    bridge_ids[2] = [3, 0]  # image 2's neighbour list now reaches across to image 3
    bridge_ids[3] = [2, 4]
    plain = graph_labels(bridge_ids, scores, params)
    assert plain[0] == plain[3]  # the cosine alone merges the two groups
    verdict = np.ones(ids.shape, np.int8)
    verdict[2, 0] = verdict[3, 0] = -1  # the bridge is refuted
    verdict[6] = [1, 0]  # 6–0 verified, 6–1 unknown
    labels = graph_labels(bridge_ids, scores, params, verdict=verdict)
    assert labels[0] != labels[3]
    assert labels[6] == labels[0]
    assert len(set(labels[:3])) == 1 and len(set(labels[3:6])) == 1


def test_cluster_verify_groups_views_and_reports_unverifiable(views_index: Index) -> None:
    result = cluster_index(views_index, match=True, save=False, params=GraphParams(k=5))
    names = views_index.names
    for src in ("temple", "portrait", "flower", "package"):
        labs = {result.labels[i] for i, n in enumerate(names) if n.startswith(src + "/")}
        assert len(labs) == 1 and -1 not in labs
        inside = [n for i, n in enumerate(names) if result.labels[i] == next(iter(labs))]
        assert all(n.startswith(src + "/") for n in inside)
    assert result.unverifiable == ["blank/blank.png"]
    assert result.to_dict()["unverifiable"] == ["blank/blank.png"]
    assert any("geometric verification" in n for n in result.notes)
    assert result.params["verify"]["min_inliers"] == 15
    with pytest.raises(Exception, match="graph method"):
        cluster_index(views_index, "hdbscan", match=True, save=False)


def test_rerank_puts_verified_matches_first_and_reports_inliers(views_index: Index) -> None:
    names = views_index.names
    q = names.index("temple/temple_00.jpg")
    view, other, blank = (
        names.index("temple/temple_02.jpg"),
        names.index("portrait/portrait_00.jpg"),
        names.index("blank/blank.png"),
    )
    root = views_index.root
    matches = [
        Match(str(root / names[i]), s, None, r, i, names[i])
        for r, (i, s) in enumerate([(other, 0.95), (blank, 0.9), (view, 0.5)], start=1)
    ]
    ranked = views_index.rerank(views_index.features.get(q), matches)
    assert [m.id for m in ranked] == [view, other, blank]  # verified first, then by cosine
    assert [m.rank for m in ranked] == [1, 2, 3]
    assert ranked[0].inliers >= 15 and ranked[1].inliers < 15 and ranked[2].inliers is None


def test_search_rerank_end_to_end(views_index: Index, views_dir: Path) -> None:
    query = views_dir / "temple" / "temple_01.jpg"
    res = views_index.search_many([str(query)], 3, rerank=10)[0]
    assert len(res.matches) == 3
    assert [m.name.split("/")[0] for m in res.matches[:2]] == ["temple", "temple"]
    assert all(m.inliers is not None for m in res.matches[:2])
    assert res.to_dict()["matches"][0]["inliers"] >= 15
    # an outside image (not indexed) is verified from its own features
    outside = Image.open(query).rotate(3, expand=False)
    res = views_index.search_many([outside], 2, rerank=10)[0]
    assert res.matches[0].name.startswith("temple/") and res.matches[0].inliers >= 15
    plain = views_index.search_many([str(query)], 3)[0]
    assert all(m.inliers is None for m in plain.matches)


def test_rerank_of_a_bare_vector_is_a_one_line_error(views_index: Index) -> None:
    from lookalike.errors import LookalikeError

    with pytest.raises(LookalikeError, match="query image"):
        views_index.search_many([views_index.vectors[0] * 0.5], 2, rerank=5)


# --- CLI ----------------------------------------------------------------------------------------------------------


def test_cli_features_pairs_cluster_search(views: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    Index.build(views, idx)
    res = runner.invoke(app, ["pairs", "--index", str(idx), "--verify", "-q", "-n", "4"])  # computes features first
    assert res.exit_code == 0, res.output
    lines = [line.split() for line in res.stdout.strip().splitlines() if line and not line.startswith(("note", " "))]
    rows = [r for r in lines if len(r) == 4]
    assert rows and all(r[0].split("/")[0] == r[1].split("/")[0] and int(r[3]) >= 15 for r in rows)
    res = runner.invoke(app, ["features", "--index", str(idx), "-q"])
    assert res.exit_code == 0 and "0 computed now" in res.output
    res = runner.invoke(app, ["cluster", "--index", str(idx), "--verify", "-q", "-k", "5", "--json"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app, ["search", str(views / "temple" / "temple_01.jpg"), "--index", str(idx), "--rerank", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert '"inliers"' in res.stdout


def test_cluster_verify_cuts_what_the_cosine_joins(views_index: Index) -> None:
    """Thresholds so low that the cosine rules join every kNN pair into one blob: the verdicts must cut it back
    into one cluster per picture (the blank image, unverifiable, may join by cosine)."""
    params = GraphParams(k=5, strong=0.0, weak=0.0, local_ratio=0)
    plain = cluster_index(views_index, save=False, params=params)
    assert plain.labels.max() == 0  # one cluster
    verified = cluster_index(views_index, match=True, save=False, params=params)
    names = views_index.names
    sources = ("temple", "portrait", "flower", "package")
    label_of = {src: {verified.labels[i] for i, n in enumerate(names) if n.startswith(src + "/")} for src in sources}
    assert all(len(labs) == 1 for labs in label_of.values())
    assert len({next(iter(labs)) for labs in label_of.values()}) == 4


# --- re-ranking's fast path: the memory-mapped pack and batched matching -------------------------------------------


def test_batched_matching_finds_the_matches_of_pair_by_pair(views_index: Index) -> None:
    from lookalike.verify.match import mutual_matches, mutual_matches_many, rootsift_rows

    cache = views_index.features
    cache.ensure()
    usable = [i for i in range(len(views_index)) if cache.get(i).usable]
    query = cache.get(usable[0]).rootsift(512)
    # candidates of different lengths (padding must never match), one truncated to exercise short rows
    others = [cache.get(i) for i in usable[1:]]
    counts = np.array([min(len(f), 512) for f in others])
    counts[1] = min(counts[1], 60)
    stack = np.zeros((len(others), int(counts.max()), 128), np.uint8)
    for r, f in enumerate(others):
        stack[r, : counts[r]] = f.sift[: counts[r]]
    got = mutual_matches_many(query, rootsift_rows(stack), counts, 0.8)
    total = 0
    for r, f in enumerate(others):
        ia, ib = mutual_matches(query, f.rootsift(int(counts[r])), 0.8)
        order_a, order_b = np.argsort(ia), np.argsort(got[r][0])
        assert np.array_equal(ia[order_a], got[r][0][order_b]) and np.array_equal(ib[order_a], got[r][1][order_b])
        total += len(ia)
    assert total > 100  # views of one picture are among them: the comparison covers real matches


def test_rerank_reads_the_pack_and_agrees_with_pair_by_pair(views: Path, tmp_path: Path) -> None:
    from lookalike.verify import verify_against
    from lookalike.verify.rerank import RERANK_KEYPOINTS

    index = Index.build(views, tmp_path / "idx")
    cache = index.local_features()  # builds the pack too
    pack_json = index.store.path / FEATURES_DIR / f"pack-{RERANK_KEYPOINTS}.json"
    assert pack_json.is_file()
    conf = MatchConf(keypoints=RERANK_KEYPOINTS)
    q = index.names.index("temple/temple_00.jpg")
    query = cache.get(q)
    ids = [i for i in range(len(index)) if i != q]
    expected = [verify(query, cache.get(i), conf) for i in ids]

    fresh = FeatureCache(index.store)  # nothing in memory: candidates must come from the pack, not their files
    fresh.get = lambda i: (_ for _ in ()).throw(AssertionError(f"read file of {i}"))  # type: ignore[method-assign]
    got = verify_against(query, fresh, ids, conf, workers=2)
    assert [v.status for v in got] == [v.status for v in expected]
    assert [v.inliers for v in got if v.verified] == [v.inliers for v in expected if v.verified]
    assert sum(v.verified for v in got) >= 2
    # a pair with fewer tentative matches than min_inliers is not fitted: no-match, 0 inliers
    assert all(v.inliers == 0 for v in got if v.status == NO_MATCH and v.matches < conf.min_inliers)


def test_a_corrupt_or_foreign_pack_is_rebuilt_not_trusted(views: Path, tmp_path: Path) -> None:
    index = Index.build(views, tmp_path / "idx")
    index.local_features()
    folder = index.store.path / FEATURES_DIR
    (folder / "pack-512-sift.npy").write_bytes(b"\x93NUMPY garbage")
    cache = FeatureCache(index.store)
    pack = cache.pack(512)
    assert pack is not None and len([h for h in pack.rows if h]) == len(index)
    h = index.store.column("hash")[0]
    assert np.array_equal(pack.features(h).sift, cache.get(0).sift[:512])
    assert FeatureCache(index.store).pack(512, build=False) is not None  # the rebuilt one opens
    assert FeatureCache(index.store, FeatureConf(64, 1024)).pack(512, build=False) is None  # other settings


def test_a_pack_holds_each_file_s_strongest_keypoints_and_zero_rows_for_unreadable_ones(
    views: Path, tmp_path: Path
) -> None:
    """The pack is written row by row (no writable memory map, whose pages would stay in memory): every readable
    file's strongest keypoints in its row, padded with zeros, and an unreadable file's row zero and unnamed."""
    from lookalike.verify.local_features import FeaturePack

    index = Index.build(views, tmp_path / "idx")
    cache = index.local_features()
    hashes = index.store.column("hash")
    broken = sorted(hashes)[0]
    (index.store.path / FEATURES_DIR / f"{broken}.npz").write_bytes(b"not a zip")
    pack = FeaturePack.build(FeatureCache(index.store), 64)
    assert pack is not None and broken not in pack.rows and len(pack.count) == len(set(hashes))
    assert pack.count[-1] == 0 and not pack.sift[-1].any() and not pack.xy[-1].any()
    for i, h in enumerate(hashes):
        if h == broken:
            continue
        f, r = cache.get(i), pack.rows[h]
        c = min(len(f), 64)
        assert pack.count[r] == c and tuple(pack.size[r]) == tuple(f.size)
        assert np.array_equal(pack.sift[r, :c], f.sift[:c]) and np.array_equal(pack.xy[r, :c], f.xy[:c])
        assert not pack.sift[r, c:].any()
