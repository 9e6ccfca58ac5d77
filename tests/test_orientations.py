"""Rotated and mirrored copies (``dedupe --orientations``), on copies generated from the bundled sample photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike import Index
from lookalike.cli import app
from lookalike.dedupe import near_duplicates
from lookalike.dedupe.orientations import ORIENTATIONS, orientation_vectors, turn_array, turn_image
from lookalike.store import INDEX_FILES, ORIENTATIONS_FILE

# name suffix -> which turn of the copy gives back the original (the copy is the original turned the other way)
TURNS = {
    "r90": Image.Transpose.ROTATE_90,
    "r180": Image.Transpose.ROTATE_180,
    "r270": Image.Transpose.ROTATE_270,
    "mirror": Image.Transpose.FLIP_LEFT_RIGHT,
}


def _center(img: Image.Image, frac: float) -> Image.Image:
    w, h = img.size
    return img.crop(
        (int(w * (1 - frac) / 2), int(h * (1 - frac) / 2), int(w * (1 + frac) / 2), int(h * (1 + frac) / 2))
    )


@pytest.fixture(scope="module")
def turned_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each sample photo (640 px) with copies turned 90°, 180° (recompressed), 270° (half size), mirrored, and
    ``deep/``: a turned 50% crop (beyond the pixel check's range: only a homography can confirm it)."""
    from lookalike.samples import make_samples

    base = tmp_path_factory.mktemp("turned")
    made = make_samples(base / "made", per_class=1, size=640)
    root = base / "photos"
    (root / "copies").mkdir(parents=True)
    (root / "deep").mkdir()
    for src in sorted(made.rglob("*.jpg")):
        stem = src.parent.name
        shutil.copy(src, root / f"{stem}.jpg")
        img = Image.open(src).convert("RGB")
        img.transpose(TURNS["r90"]).save(root / "copies" / f"{stem}_r90.jpg")
        img.transpose(TURNS["r180"]).save(root / "copies" / f"{stem}_r180.jpg", quality=40)
        half = img.transpose(TURNS["r270"])
        half.resize((half.width // 2, half.height // 2), Image.Resampling.LANCZOS).save(
            root / "copies" / f"{stem}_r270.jpg"
        )
        img.transpose(TURNS["mirror"]).save(root / "copies" / f"{stem}_mirror.jpg")
        _center(img, 0.5).transpose(TURNS["r90"]).save(root / "deep" / f"{stem}_r90.jpg")
    return root


@pytest.fixture(scope="module")
def turned_index(turned_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Index:
    return Index.build(turned_dir, tmp_path_factory.mktemp("turned-index") / "idx", labels="none")


def _turned(name: str) -> str | None:
    stem = Path(name).stem
    return stem.split("_")[1] if "_" in stem else None


def _check_turns(group: dict) -> None:
    """Every reported turn is right: turning a by it gives b, known from how the copies were made."""
    for tp in group["turns"]:
        a, b, t = tp["a"], tp["b"], ORIENTATIONS.index(tp["turn"])
        # the state of each image relative to the original, as a transform applied to the original's pixels
        probe = np.arange(12, dtype=np.float32).reshape(3, 4)
        state = {n: probe if _turned(n) is None else _apply(probe, _turned(n)) for n in (a, b)}
        assert np.array_equal(turn_array(state[a], t), state[b]), tp


def _apply(x: np.ndarray, kind: str) -> np.ndarray:
    return turn_array(x, {"r90": 0, "r180": 1, "r270": 2, "mirror": 3}[kind])


def test_turns_of_arrays_are_the_turns_of_images() -> None:
    img = Image.fromarray(np.arange(6 * 10, dtype=np.uint8).reshape(6, 10) * 4)
    for t in range(len(ORIENTATIONS)):
        assert np.array_equal(np.asarray(turn_image(img, t)), turn_array(np.asarray(img), t)), ORIENTATIONS[t]


def test_turned_copies_are_found_only_with_orientations(turned_index: Index) -> None:
    idx = turned_index
    plain = near_duplicates(idx.vectors, idx.names, paths=idx.paths)
    assert plain == []  # upright, no copy here lines up with its original
    notes: list[str] = []
    turned = idx.orientation_vectors(notes=notes)
    assert turned.shape == (len(idx), len(ORIENTATIONS), idx.vectors.shape[1])
    groups = near_duplicates(idx.vectors, idx.names, paths=idx.paths, turned=turned, notes=notes)
    stems = sorted({Path(n).stem.split("_")[0] for n in idx.names})
    by_stem = {Path(p).stem: g for g in groups for p in g["paths"] if "/" not in p}
    assert sorted(by_stem) == stems, groups
    for stem, g in by_stem.items():
        # every turned copy joins its original; the 50% crop needs the homography, given below
        assert sorted(g["paths"]) == sorted([f"{stem}.jpg"] + [f"copies/{stem}_{k}.jpg" for k in TURNS]), g
        _check_turns(g)
    assert all(len({p.split("/")[-1].split("_")[0].removesuffix(".jpg") for p in g["paths"]}) == 1 for g in groups)
    assert any("rotated or mirrored candidate pairs are copies" in n for n in notes)


def test_a_homography_confirms_turned_crops_the_pixels_cannot(turned_index: Index) -> None:
    idx = turned_index
    turned = idx.orientation_vectors()
    without = near_duplicates(idx.vectors, idx.names, 0.7, paths=idx.paths, turned=turned)
    notes: list[str] = []
    withh = near_duplicates(
        idx.vectors, idx.names, 0.7, paths=idx.paths, turned=turned, features=idx.features, notes=notes
    )
    deep = {n for n in idx.names if n.startswith("deep/")}
    grouped = {p for g in without for p in g["paths"]}
    assert not deep & grouped  # the pixel check alone cannot line up a 50% crop
    joined = {p for g in withh for p in g["paths"] if any("/" not in q for q in g["paths"])}
    assert len(deep & joined) >= len(deep) - 1, (withh, notes)  # a flat product shot may lack keypoints
    for g in withh:
        assert len({p.split("/")[-1].split("_")[0].removesuffix(".jpg") for p in g["paths"]}) == 1, g
        _check_turns(g)


def test_orientation_vectors_are_cached_by_content(turned_index: Index, tmp_path: Path) -> None:
    idx = turned_index
    calls: list[int] = []

    def describe(images: list[Image.Image]) -> np.ndarray:
        calls.append(len(images))
        return idx.describer.describe_images(images)

    first = orientation_vectors(idx.store, describe, idx.describer.resolution)
    assert sum(calls) == 0  # the tests above already described and cached every image
    assert ORIENTATIONS_FILE in INDEX_FILES and (idx.store.path / ORIENTATIONS_FILE).is_file()
    (idx.store.path / ORIENTATIONS_FILE).write_bytes(b"not an npz")  # a corrupt cache is rebuilt, not trusted
    again = orientation_vectors(idx.store, describe, idx.describer.resolution)
    assert sum(calls) == len(idx) * len(ORIENTATIONS)
    assert np.allclose(first.astype(np.float32), again.astype(np.float32), atol=2e-3)


def test_cli_dedupe_orientations(turned_index: Index, tmp_path: Path) -> None:
    runner = CliRunner()
    index_dir = str(turned_index.store.path)
    r = runner.invoke(app, ["dedupe", "find", "--index", index_dir, "--orientations", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["orientations"] is True and len(data["groups"]) >= 4
    assert all("turns" in g for g in data["groups"])
    r = runner.invoke(app, ["dedupe", "find", "--index", index_dir, "--orientations"])
    assert r.exit_code == 0 and "turned rot" in r.stdout, r.output
    plan = tmp_path / "plan.json"
    r = runner.invoke(app, ["dedupe", "plan", str(plan), "--index", index_dir, "--orientations", "--json"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(plan.read_text())["groups"]) == len(data["groups"])
    r = runner.invoke(app, ["dedupe", "series", "--index", index_dir, "--orientations"])
    assert r.exit_code == 2 and "No such option" in r.output  # series has no --orientations
