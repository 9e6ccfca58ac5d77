"""``index --features`` (issue 37): one read and one decode of each photo give its vector and its local features;
the features are the bytes ``lookalike features`` makes, the setting is stored and followed, and queries are decoded
as the index's photos were."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lookalike import images
from lookalike.errors import IndexMismatchError
from lookalike.index import Index
from lookalike.samples import make_views
from lookalike.store import FEATURES_DIR
from lookalike.verify import FeatureCache
from lookalike.verify.local_features import FeatureConf, features_of_file


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Views of the sample photos enlarged to 2,000 px JPEGs: larger than the feature size, so the JPEG draft decode
    differs between the model's 320 px (1/4 scale) and SIFT's 1,024 px (full scale)."""
    from PIL import Image

    out = make_views(tmp_path_factory.mktemp("once") / "photos", per_source=2, size=800)
    for path in out.rglob("*.jpg"):
        img = Image.open(path)
        img.load()
        scale = 2000 / max(img.size)
        img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC).save(
            path, quality=90
        )
    return out


@pytest.fixture(scope="module")
def built(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Index:
    return Index.build(photos, tmp_path_factory.mktemp("once-index") / "idx", features=True)


def test_each_photo_is_read_once_and_gets_vector_and_features(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: dict[str, int] = {}
    real = images.read_file

    def counting(path, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        reads[str(path)] = reads.get(str(path), 0) + 1
        return real(path, *a, **k)

    import lookalike.embed
    import lookalike.verify.local_features

    monkeypatch.setattr(lookalike.embed, "read_file", counting)
    monkeypatch.setattr(lookalike.verify.local_features, "read_file", counting)
    index = Index.build(photos, tmp_path / "idx", features=True)
    assert len(index) >= 6 and set(reads.values()) == {1} and len(reads) == len(index)
    cache = FeatureCache(index.store)
    assert cache.conf == FeatureConf() and cache.missing() == []
    assert index.store.meta["features"] == 1024


def test_features_are_the_bytes_the_features_step_makes(built: Index) -> None:
    conf = FeatureCache(built.store).conf
    for i in range(len(built)):
        stored = (built.store.path / FEATURES_DIR / f"{built.store.column('hash')[i]}.npz").read_bytes()
        made, error = features_of_file(built.paths[i], built.names[i], conf)
        assert error is None and made is not None
        assert stored == made.to_bytes(), built.names[i]


def test_queries_are_decoded_as_the_index_was(built: Index) -> None:
    """A photo given as a query file meets its own stored vector: same decode, same pixels, same vector."""
    ids = [0, len(built) - 1]
    queried = built.embed([built.paths[i] for i in ids])
    assert np.sum(queried * built.vectors[ids], axis=1).min() >= 0.9999
    assert built.describer.decode_size == 1024


def test_vectors_stay_close_to_a_plain_index(built: Index, photos: Path, tmp_path: Path) -> None:
    plain = Index.build(photos, tmp_path / "plain")
    assert plain.describer.decode_size == plain.describer.resolution
    order = [plain.names.index(n) for n in built.names]
    cos = np.sum(built.vectors * plain.vectors[order], axis=1)
    assert cos.min() > 0.97 and cos.max() < 1.0 - 1e-6  # the other decode: close, not the same pixels


def test_the_setting_is_stored_and_followed(built: Index, photos: Path, tmp_path: Path) -> None:
    copy = tmp_path / "photos"
    shutil.copytree(photos, copy)
    Index.build(copy, tmp_path / "idx", features=True)
    new = copy / "new" / "one.jpg"
    new.parent.mkdir()
    shutil.copyfile(next(copy.rglob("*.jpg")), copy / "new" / "same.jpg")  # same bytes: features by hash already
    from PIL import Image

    Image.open(next(copy.rglob("*.jpg"))).rotate(90, expand=True).save(new)
    again = Index.build(copy, tmp_path / "idx")  # left out: follows the stored setting
    assert FeatureCache(again.store).missing() == []
    assert again.store.meta["features"] == 1024
    gone = again.store.path / FEATURES_DIR / f"{again.store.column('hash')[0]}.npz"
    gone.unlink()  # lost (or never made: a Ray run's workers return vectors only): made by the post-step
    Index.build(copy, tmp_path / "idx")
    assert gone.is_file()
    with pytest.raises(IndexMismatchError, match="features: 1024 in the index, none asked"):
        Index.build(copy, tmp_path / "idx", features=False)
