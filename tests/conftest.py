"""Shared fixtures: sample photo folders made from photos that dependencies ship (never ../shared)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lookalike.samples import make_samples


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 classes × 6 real-photo crops; read-only for tests (copy it to modify)."""
    return make_samples(tmp_path_factory.mktemp("samples") / "photos", per_class=6, size=200)


@pytest.fixture(scope="session")
def sample_queries(sample_dir: Path) -> Path:
    return sample_dir.parent / f"{sample_dir.name}-queries"


@pytest.fixture(scope="session")
def sample_index(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from lookalike import Index

    return Index.build(sample_dir, tmp_path_factory.mktemp("index") / "idx", labels="folders")


@pytest.fixture
def photos(sample_dir: Path, tmp_path: Path) -> Path:
    """A private, modifiable copy of the sample photos."""
    dst = tmp_path / "photos"
    shutil.copytree(sample_dir, dst)
    return dst


# Property-based tests (hypothesis): few examples by default so ./test.sh stays fast; HYPOTHESIS_PROFILE=bench for a
# long search (and `--hypothesis-seed` to replay one).
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci", max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False
    )
    settings.register_profile("bench", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a dev dependency; the property tests skip without it
    pass


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``samples.make_duplicates`` (originals, copies, a burst) indexed in place (PHOTOS/.lookalike); read-only."""
    from lookalike import Index
    from lookalike.samples import make_duplicates

    root = make_duplicates(tmp_path_factory.mktemp("dups") / "photos")
    Index.build(root, labels="none")
    return root
