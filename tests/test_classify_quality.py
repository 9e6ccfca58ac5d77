"""A figure that matters: on a labelled set with one known confusable pair, the errors land in that pair.

The toy samples (crops of four unrelated photos) catch crashes, not quality regressions: every sane classifier gets
them all right. Here two classes are cut from the same photo (the temple), so no classifier can tell them apart
reliably, while three others (flower, portrait, package) come from distinct photos. A working describer and head
confuse only the pair and get the distinct classes right; a broken embedding, vote or evaluation spreads the
errors elsewhere. Self-contained (photos that scikit-learn and matplotlib ship) and a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.evaluate import evaluate
from lookalike.index import Index
from lookalike.samples import random_view, source_photos

PAIR = ("temple_a", "temple_b")


def _make(out: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    photos = {name: Image.open(path).convert("RGB") for name, path in source_photos().items()}
    temple = photos.pop("temple")
    classes = {PAIR[0]: temple, PAIR[1]: temple, **photos}
    for name, img in classes.items():
        (out / name).mkdir(parents=True)
        for i in range(per_class):
            random_view(img, rng, 160).save(out / name / f"{name}_{i:02d}.jpg", quality=90)
    return out


@pytest.fixture(scope="module")
def confusable(tmp_path_factory: pytest.TempPathFactory) -> tuple[Index, Path]:
    base = tmp_path_factory.mktemp("confusable")
    train = _make(base / "train", per_class=8, seed=0)
    test = _make(base / "test", per_class=6, seed=100)
    return Index.build(train, base / "index"), test


@pytest.mark.parametrize("method", ["knn", "linear"])
def test_errors_fall_in_the_confusable_pair(confusable: tuple[Index, Path], method: str) -> None:
    index, test = confusable
    m = evaluate(index, test, method)
    labels = m["confusion"]["labels"]
    cm = np.array(m["confusion"]["matrix"])
    assert labels == ["flower", "package", "portrait", *PAIR] and cm.sum() == m["n"] == 30
    pair = [labels.index(c) for c in PAIR]
    distinct = [i for i in range(len(labels)) if i not in pair]
    errors = cm - np.diag(np.diag(cm))
    # every mistake is one of the pair taken for the other; two classes of one photo cannot all be told apart
    assert errors[np.ix_(pair, pair)].sum() == errors.sum() >= 2
    # the distinct classes are all right, and nothing of the pair is called one of them
    for i in distinct:
        assert m["per_class"][labels[i]]["recall"] == 1.0 and m["per_class"][labels[i]]["precision"] == 1.0
    pair_accuracy = np.trace(cm[np.ix_(pair, pair)]) / cm[pair].sum()
    assert pair_accuracy < 0.95 and m["accuracy"] == pytest.approx((18 + np.trace(cm[np.ix_(pair, pair)])) / 30)
