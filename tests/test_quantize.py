"""int8 indexes: a statically quantized backbone calibrated on the indexed photos, kept with the index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lookalike import Index
from lookalike.config import IndexConfig
from lookalike.embed import Describer
from lookalike.errors import ConfigError, IndexMismatchError, LookalikeError
from lookalike.models.quantize import INT8_FILE

RES = 128  # small inputs keep calibration quick; the mechanism is the same at 320


@pytest.fixture(scope="module")
def int8_index(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Index:
    return Index.build(sample_dir, tmp_path_factory.mktemp("int8") / "idx", resolution=RES, precision="int8")


def test_int8_index_keeps_its_calibrated_model_and_stays_close_to_fp32(int8_index: Index, sample_dir: Path) -> None:
    path = int8_index.store.path
    assert json.loads((path / "meta.json").read_text())["precision"] == "int8"
    assert (path / INT8_FILE).is_file()
    assert "24 of the images" in int8_index.report.calibration
    fp32 = Index.build(sample_dir, path.parent / "fp32", resolution=RES)
    a = dict(zip(int8_index.names, int8_index.vectors, strict=True))
    b = dict(zip(fp32.names, fp32.vectors, strict=True))
    cos = np.array([float(a[n] @ b[n]) for n in a])
    assert np.median(cos) > 0.97 and cos.min() > 0.9  # close to fp32 ...
    assert cos.min() < 0.99999  # ... but really quantized, not the fp32 model under another name


def test_queries_run_the_index_own_int8_model(int8_index: Index, sample_dir: Path) -> None:
    reopened = Index.open(int8_index.store.path)
    assert reopened.describer.model.int8_path == int8_index.store.path / INT8_FILE
    some = sorted(sample_dir.rglob("*.jpg"))[3]
    again = reopened.embed([str(some)])[0]
    stored = reopened.vectors[reopened.names.index(some.relative_to(sample_dir).as_posix())]
    assert float(again @ stored) > 0.9999  # the query is described exactly as the image was when indexed


def test_another_precision_is_refused_naming_both_or_rebuilt(int8_index: Index, sample_dir: Path) -> None:
    with pytest.raises(IndexMismatchError, match="precision: int8 in the index, fp32 asked"):
        Index.build(sample_dir, int8_index.store.path, precision="fp32")
    copy = int8_index.store.path.parent / "copy"
    shutil.copytree(int8_index.store.path, copy)
    rebuilt = Index.build(sample_dir, copy, precision="fp32", rebuild=True)
    assert rebuilt.store.meta["precision"] == "fp32" and rebuilt.report.embedded == len(rebuilt)


def test_a_lost_int8_model_is_reported_not_recalibrated(int8_index: Index, tmp_path: Path) -> None:
    copy = tmp_path / "idx"
    shutil.copytree(int8_index.store.path, copy)
    (copy / INT8_FILE).unlink()
    with pytest.raises(LookalikeError, match=f"{INT8_FILE} is missing; rebuild"):
        Index.open(copy).search(str(next(Path(int8_index.root).rglob("*.jpg"))))


def test_too_few_images_calibrate_on_the_bundled_photos_and_say_so(sample_dir: Path, tmp_path: Path) -> None:
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(sample_dir.rglob("*.jpg"))[:3]:
        shutil.copy(p, few / p.name)
    (few / "broken.jpg").write_bytes(b"not a jpeg")
    idx = Index.build(few, tmp_path / "idx", resolution=RES, precision="int8")
    assert "only 3 usable image(s)" in idx.report.calibration and "bundled sample photos" in idx.report.calibration
    assert (tmp_path / "idx" / INT8_FILE).is_file() and len(idx) == 3


def test_int8_needs_onnx_runtime() -> None:
    with pytest.raises(ConfigError, match="precision") as exc:
        Describer.from_config(IndexConfig(precision="int8"), runtime="torch")
    assert exc.value.setting == "precision"
    with pytest.raises(ConfigError, match="precision"):
        IndexConfig(precision="int4")
