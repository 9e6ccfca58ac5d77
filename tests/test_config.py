"""IndexConfig / RunOptions: validated on construction, stored and read back, merged and compared by field."""

from __future__ import annotations

import pytest

from lookalike.config import IndexConfig, RunOptions, folder_label, split_settings
from lookalike.errors import ConfigError, LookalikeError


def test_the_one_label_rule_is_the_first_folder_under_the_root() -> None:
    assert folder_label("Kitchen/a.jpg") == "Kitchen"
    assert folder_label("Kitchen/2019/summer/a.jpg") == "Kitchen"
    assert folder_label("a.jpg") is None
    assert folder_label("Kitchen/2019/a.jpg", "none") is None


def test_meta_round_trip_keeps_every_field() -> None:
    config = IndexConfig(
        model="efficientnet-lite2",
        pooling={"name": "vlad", "clusters": 16, "soft": True, "alpha": 20.0},
        resolution=256,
        pca=64,
        vectors="float16",
        labels="none",
        precision="int8",  # stored resolved: a config read back from meta always names its precision
    )
    meta = {**config.to_meta(), "model": {"name": "efficientnet-lite2", "weights": "abc", "feature_dim": 1280}}
    back = IndexConfig.from_meta(meta)
    assert back == config
    assert back.differences(config) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pooling": "max"}, "unknown pooling 'max'"),
        ({"resolution": 8}, "resolution must be at least 16"),
        ({"pca": 0}, "pca needs a positive dimension"),
        ({"vectors": "int8"}, "vectors must be one of float32, float16"),
        ({"labels": "colour"}, "labels must be one of folders, none"),
        ({"pooling": "gem", "vocab": "v.npz"}, "needs pooling vlad"),
    ],
)
def test_bad_settings_are_refused_on_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        IndexConfig(**kwargs)
    assert isinstance(info.value, LookalikeError)  # faces catch one family of errors


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"workers": 0}, "workers"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"runtime": "tpu"}, "runtime"),
        ({"engine": "spark"}, "engine"),
        ({"ann": "lsh"}, "ann"),
    ],
)
def test_bad_run_options_name_their_setting(kwargs: dict, setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunOptions(**kwargs)
    assert info.value.setting == setting and str(info.value).startswith(setting)


def test_unasked_settings_follow_the_stored_index() -> None:
    stored = IndexConfig(pooling={"name": "vlad", "clusters": 16, "soft": False, "alpha": 20.0}, resolution=320)
    # `--pooling vlad` alone after `vocab fit --clusters 16` is the same index
    assert stored.differences(stored.merged(pooling="vlad", resolution=None, pca=None)) == []
    # a value the user did give, and that differs, is a conflict named by field with both values
    asked = stored.merged(pooling={"name": "vlad", "clusters": 32})
    assert stored.differences(asked) == [("pooling.clusters", 16, 32)]
    assert IndexConfig.describe_differences(stored.differences(asked)) == "pooling.clusters: 16 in the index, 32 asked"
    assert stored.differences(stored.merged(pooling="gem")) == [("pooling", "vlad", "gem")]
    assert stored.differences(stored.merged(model="efficientnet-lite2", resolution=256)) == [
        ("model", "efficientnet-lite0", "efficientnet-lite2"),
        ("resolution", 320, 256),
    ]
    # storage type and label rule change no vector
    assert stored.differences(stored.merged(vectors="float16", labels="none")) == []


def test_settings_split_into_index_and_run_and_unknown_ones_are_refused() -> None:
    index, run = split_settings({"model": "m", "pca": 8, "batch_size": 4, "progress": True})
    assert index == {"model": "m", "pca": 8} and run == {"batch_size": 4, "progress": True}
    with pytest.raises(ConfigError, match="unknown setting"):
        split_settings({"frobnicate": 1})
    with pytest.raises(ConfigError, match="unknown index setting"):
        IndexConfig().merged(batch_size=4)


def test_constructing_only_stores() -> None:
    """Like a scikit-learn estimator: nothing is loaded or checked against the disk when a config is made."""
    config = IndexConfig(model="/no/such/model/folder", weights="/no/such/file.pt", vocab="/nope.npz", pooling="vlad")
    assert config.model == "/no/such/model/folder"
