"""The Ray engine writes the same index as the local engine."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from lookalike.errors import LookalikeError
from lookalike.index import Index
from lookalike.samples import make_samples

HAS_RAY = importlib.util.find_spec("ray") is not None


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_samples(tmp_path_factory.mktemp("dist") / "photos", per_class=5, size=160)
    (root / "temple" / "broken.jpg").write_bytes(b"not a jpeg at all")  # must be skipped the same way by both
    # a name that is not UTF-8 travels through Ray Data (Arrow) as bytes; a pipe is never handed to a worker
    shutil.copy(sorted((root / "flower").glob("*.jpg"))[0], root / "flower" / os.fsdecode(b"\xff odd.jpg"))
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "temple" / "pipe.jpg")
    return root


def test_unknown_engine_is_one_clear_error(photos: Path, tmp_path: Path) -> None:
    with pytest.raises(LookalikeError, match="engine must be one of local, ray"):
        Index.build(photos, tmp_path / "ix", engine="spark")


def test_missing_ray_says_how_to_install(photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_ray(name: str, *args: object, **kwargs: object) -> object:
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(LookalikeError, match=r"pip install \"lookalike\[ray\]\""):
        Index.build(photos, tmp_path / "ix", engine="ray")


def test_encode_decode_round_trip_keeps_items_and_vectors() -> None:
    from lookalike.distributed import decode_items, encode_items
    from lookalike.embed import Prepared
    from lookalike.images import ImageMeta

    items = [
        Prepared(Path("/a/x.jpg"), hash="h1", meta=ImageMeta(10, 20, "2020:01:01 00:00:00", 1.5, None)),
        Prepared(Path("/a/bad.jpg"), error="not an image"),
        Prepared(Path("/a/same.jpg"), hash="h3", unchanged=True),
        Prepared(Path("/a/y.jpg"), hash="h4", meta=ImageMeta(3, 4)),
        Prepared(Path(os.fsdecode(b"/a/\xff\xfe.jpg")), hash="h5", meta=ImageMeta(5, 6)),
    ]
    vectors = np.arange(9, dtype=np.float32).reshape(3, 3)
    batch = decode_items(encode_items(items, vectors, 3))
    assert [(i.path, i.hash, i.error, i.unchanged, i.meta) for i in batch.items] == [
        (i.path, i.hash, i.error, i.unchanged, i.meta) for i in items
    ]
    np.testing.assert_array_equal(batch.vectors, vectors)
    assert [i.path.name for i in batch.described] == ["x.jpg", "y.jpg", os.fsdecode(b"\xff\xfe.jpg")]


@pytest.mark.skipif(not HAS_RAY, reason='Ray is not installed (pip install "lookalike[ray]")')
def test_ray_engine_builds_the_same_index_as_local(photos: Path, tmp_path: Path) -> None:
    import ray

    local = Index.build(photos, tmp_path / "local", batch_size=4)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote = Index.build(photos, tmp_path / "ray", engine="ray", batch_size=4, checkpoint_every=7)
        assert ray.is_initialized()  # a Ray the caller started is left running
    finally:
        ray.shutdown()
    assert remote.report is not None and local.report is not None
    assert remote.report.added == local.report.added == len(local) > 0
    assert remote.names == local.names
    assert remote.labels == local.labels
    assert remote.store.column("hash") == local.store.column("hash")
    assert remote.store.column("width") == local.store.column("width")
    assert sorted(remote.report.skipped) == sorted(local.report.skipped)
    assert sorted(s for s, _ in local.report.skipped) == ["temple/broken.jpg"] + (
        ["temple/pipe.jpg"] if hasattr(os, "mkfifo") else []
    )
    assert os.fsdecode(b"flower/\xff odd.jpg") in remote.names
    np.testing.assert_allclose(remote.vectors, local.vectors, atol=1e-4)
    assert remote.store.pending_parts() == 0
    # everything after indexing is the local code: an update run embeds nothing
    again = Index.build(photos, tmp_path / "ray", engine="ray", num_workers=2)
    assert again.report is not None and again.report.embedded == 0 and again.report.unchanged == len(local)


@pytest.mark.skipif(not HAS_RAY, reason='Ray is not installed (pip install "lookalike[ray]")')
def test_interrupted_ray_run_resumes_from_its_checkpoints(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq
    import ray

    from lookalike import distributed

    real_decode = distributed.decode_items
    seen: list[int] = []

    def dies_on_the_third_batch(batch: dict[str, np.ndarray]) -> object:
        if len(seen) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the driver while Ray is still describing
        out = real_decode(batch)
        seen.append(len(out.described))
        return out

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        monkeypatch.setattr(distributed, "decode_items", dies_on_the_third_batch)
        with pytest.raises(KeyboardInterrupt):
            Index.build(photos, tmp_path / "ix", engine="ray", batch_size=3, checkpoint_every=2)
        # what the driver received before the interruption is on disk as checkpoints, and nothing else
        checkpointed = sum(seen)
        parts = sorted((tmp_path / "ix" / "parts").glob("part-*.parquet"))
        assert parts and sum(pq.read_metadata(p).num_rows for p in parts) == checkpointed > 0
        monkeypatch.setattr(distributed, "decode_items", real_decode)
        resumed = Index.build(photos, tmp_path / "ix", engine="ray", batch_size=3)
    finally:
        ray.shutdown()
    local = Index.build(photos, tmp_path / "local", batch_size=4)
    assert resumed.report is not None and local.report is not None
    assert checkpointed < len(local)  # interrupted mid-way
    # the checkpointed images are not embedded again; only the rest are
    assert resumed.report.resumed == checkpointed
    assert resumed.report.added == len(local) - checkpointed
    assert resumed.store.pending_parts() == 0
    assert resumed.names == local.names
    assert sorted(resumed.report.skipped) == sorted(local.report.skipped)
    np.testing.assert_allclose(resumed.vectors, local.vectors, atol=1e-4)
