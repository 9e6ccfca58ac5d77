"""int8 indexes (the default): a statically quantized backbone, calibrated on the bundled photos once per machine or on
the indexed photos, kept with the index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lookalike import Index
from lookalike.config import IndexConfig, RunOptions
from lookalike.embed import Describer
from lookalike.errors import ConfigError, IndexMismatchError, LookalikeError
from lookalike.models import quantize, registry
from lookalike.models.base import cache_dir
from lookalike.models.quantize import INT8_FILE

RES = 128  # small inputs keep calibration quick; the mechanism is the same at 320


@pytest.fixture(scope="module")
def int8_index(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Index:
    return Index.build(
        sample_dir, tmp_path_factory.mktemp("int8") / "idx", resolution=RES, precision="int8", calibration="photos"
    )


def test_int8_index_keeps_its_calibrated_model_and_stays_close_to_fp32(int8_index: Index, sample_dir: Path) -> None:
    path = int8_index.store.path
    assert json.loads((path / "meta.json").read_text())["precision"] == "int8"
    assert (path / INT8_FILE).is_file()
    assert "24 of the images" in int8_index.report.calibration
    fp32 = Index.build(sample_dir, path.parent / "fp32", resolution=RES, precision="fp32")
    a = dict(zip(int8_index.names, int8_index.vectors, strict=True))
    b = dict(zip(fp32.names, fp32.vectors, strict=True))
    cos = np.array([float(a[n] @ b[n]) for n in a])
    assert np.median(cos) > 0.97 and cos.min() > 0.9  # close to fp32 ...
    assert cos.min() < 0.99999  # ... but really quantized, not the fp32 model under another name


def test_weights_fit_the_cpu_int8_kernels_and_a_model_that_would_saturate_is_reported(
    int8_index: Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(int8_index.store.path / INT8_FILE))
    bits = {p.key: p.value for p in model.metadata_props}[quantize.WEIGHT_BITS_KEY]
    assert bits == str(quantize.weight_bits())
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    top = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    # 7 bits: no pair of u8×s8 products can overflow the 16-bit sums of CPUs without VNNI (255·64·2 < 32768)
    assert top <= 64 if bits == "7" else top > 64
    full = tmp_path / "full.onnx"
    del model.metadata_props[:]  # as written before the key: full-range weights
    onnx.save(model, str(full))
    monkeypatch.setattr(quantize, "cpu_has_vnni", lambda: False)
    with caplog.at_level("WARNING", logger="lookalike.models.base"):
        int8_index.describer.model.load_int8(full)
    assert "made for a CPU with VNNI" in caplog.text and "rebuild the index on this machine" in caplog.text
    int8_index.describer.model.load_int8(int8_index.store.path / INT8_FILE)


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
    idx = Index.build(few, tmp_path / "idx", resolution=RES, precision="int8", calibration="photos")
    assert "only 3 usable image(s)" in idx.report.calibration and "bundled sample photos" in idx.report.calibration
    assert (tmp_path / "idx" / INT8_FILE).is_file() and len(idx) == 3


def test_int8_needs_onnx_runtime() -> None:
    with pytest.raises(ConfigError, match="precision") as exc:
        Describer.from_config(IndexConfig(precision="int8"), runtime="torch")
    assert exc.value.setting == "precision"
    with pytest.raises(ConfigError, match="precision"):
        IndexConfig(precision="int4")


def test_a_new_index_is_int8_from_the_samples_calibration_made_once_per_machine(
    sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "int8_pays", lambda: True)  # int8 is the default where the CPU has VNNI
    res = 96  # a resolution no other test uses, so its machine-wide calibration can be removed and counted here
    describer = Describer.from_config(IndexConfig(resolution=res))
    cached = describer.samples_int8_path
    assert cached.parent == cache_dir() / "onnx" and cached.name.endswith(f"-samples-{res}.onnx")
    cached.unlink(missing_ok=True)
    made = []
    real = quantize.quantize_static_qdq
    monkeypatch.setattr(quantize, "quantize_static_qdq", lambda *a: made.append(a[1]) or real(*a))
    first = Index.build(sample_dir, tmp_path / "a", resolution=res)
    second = Index.build(sample_dir, tmp_path / "b", resolution=res)
    assert made == [cached]  # calibrated once, for the first index; the second copies it
    for idx in (first, second):
        assert idx.store.meta["precision"] == "int8" and idx.store.meta["calibration"] == "samples"
        assert (idx.store.path / INT8_FILE).read_bytes() == cached.read_bytes()
        assert "bundled sample photos" in idx.report.calibration
        assert idx.info()["calibration"] == "samples"
    cached.unlink()  # the index keeps its own copy: queries never need the machine's cache
    reopened = Index.open(tmp_path / "b")
    assert reopened.describer.model.int8_path == tmp_path / "b" / INT8_FILE
    one = sorted(sample_dir.rglob("*.jpg"))[0]
    stored = reopened.vectors[reopened.names.index(one.relative_to(sample_dir).as_posix())]
    assert float(reopened.embed([str(one)])[0] @ stored) > 0.9999
    assert not cached.exists()


def test_an_index_from_before_int8_stays_fp32_when_updated(sample_dir: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(sample_dir, photos)
    Index.build(photos, tmp_path / "idx", resolution=RES, precision="fp32")
    meta_path = tmp_path / "idx" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["precision"]  # as written before precision existed
    meta_path.write_text(json.dumps(meta))
    shutil.copy(sorted(photos.rglob("*.jpg"))[0], photos / "added.jpg")
    updated = Index.build(photos, tmp_path / "idx")
    assert updated.info()["precision"] == "fp32" and updated.report.embedded == 1
    assert not (tmp_path / "idx" / INT8_FILE).exists()


def test_an_unknown_calibration_source_is_refused() -> None:
    with pytest.raises(ConfigError, match="calibration must be one of samples, photos") as exc:
        RunOptions(calibration="imagenet")
    assert exc.value.setting == "calibration"


def test_the_command_line_calibrates_on_the_photos_when_asked(sample_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "lookalike.cli", "index", str(sample_dir), "--index", str(tmp_path / "idx")]
        return subprocess.run([*cmd, "--resolution", str(RES), *args], capture_output=True, text=True, timeout=300)

    bad = run("--calibration", "imagenet")
    assert bad.returncode == 1 and "--calibration must be one of samples, photos" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    ok = run("--calibration", "photos", "--quiet")
    assert ok.returncode == 0, ok.stderr
    assert "int8 calibrated on 24 of the images" in ok.stderr
    assert json.loads((tmp_path / "idx" / "meta.json").read_text())["calibration"] == "photos"


def test_without_vnni_a_new_index_is_fp32_unless_int8_is_asked(
    sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an x86 CPU without VNNI int8 needs 7-bit weights (median cosine 0.974 to fp32 against 0.994) at about fp32's
    speed, so the default there is fp32; int8 stays available by asking."""
    from lookalike.models.registry import default_precision

    monkeypatch.setattr(quantize, "cpu_has_vnni", lambda: False)
    assert default_precision("efficientnet-lite0") == "fp32"
    idx = Index.build(sample_dir, tmp_path / "idx", resolution=RES)
    assert idx.store.meta["precision"] == "fp32" and not (idx.store.path / INT8_FILE).exists()
    monkeypatch.setattr(quantize, "cpu_has_vnni", lambda: True)
    assert default_precision("efficientnet-lite0") == "int8"
    assert default_precision("efficientnet-lite0", runtime="torch") == "fp32"
