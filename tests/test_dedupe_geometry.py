"""The keypoint check behind the pixel check (lookalike.dedupe.geometry): a crop-and-rescale copy keeps its group,
a photo whose parts moved against each other (another viewpoint: parallax) is not a copy even when its thumbnail
lines up almost as well."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lookalike.dedupe.copies import candidate_pairs
from lookalike.dedupe.geometry import CONF, MIN_SHARE, confirm_copies, similarity_share
from lookalike.dedupe.pixels import pixel_scores, thumbnails
from lookalike.verify.local_features import features_of_file

W, H = 1200, 900
PIXEL = 0.8  # the synthetic "other view" lines up at NCC ~0.85: a pixel threshold below it puts it in the band


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A façade (rows of windows, specks of texture), its 90% crop at 0.6 scale saved at quality 70, and a view in
    which four vertical strips moved by different amounts (0, 10, -10, 20 px), as parts at other depths do when the
    photographer steps aside."""
    rng = np.random.default_rng(3)
    img = Image.new("RGB", (W, H), (200, 210, 230))
    d = ImageDraw.Draw(img)
    for r in range(6):
        for c in range(10):
            x, y = 80 + c * 105, 120 + r * 120
            d.rectangle([x, y, x + 60, y + 80], fill=tuple(int(v) for v in rng.integers(20, 120, 3)))
            d.rectangle([x + 25, y, x + 32, y + 80], fill=(230, 230, 230))
    for _ in range(300):
        x, y, s = int(rng.integers(0, W)), int(rng.integers(0, H)), int(rng.integers(3, 14))
        d.ellipse([x, y, x + s, y + s], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    root = tmp_path_factory.mktemp("geometry")
    img.save(root / "orig.jpg", quality=92)
    crop = img.crop((60, 45, 60 + int(W * 0.9), 45 + int(H * 0.9)))
    crop.resize((int(W * 0.54), int(H * 0.54)), Image.Resampling.LANCZOS).save(root / "copy.jpg", quality=70)
    a = np.asarray(img)
    view = a.copy()
    t = W // 4
    for b, shift in enumerate((0, 10, -10, 20)):
        view[:, b * t : (b + 1) * t] = np.roll(a[:, b * t : (b + 1) * t], shift, axis=0)
    Image.fromarray(view).save(root / "view.jpg", quality=90)
    return [root / "orig.jpg", root / "copy.jpg", root / "view.jpg"]


def test_a_copy_fits_one_similarity_and_another_view_does_not(photos: list[Path]) -> None:
    orig, copy, view = (features_of_file(p, p.name, CONF)[0] for p in photos)
    assert similarity_share(orig, copy) >= MIN_SHARE + 0.15
    assert similarity_share(orig, view) <= MIN_SHARE - 0.1


def test_too_few_matches_leave_the_pixel_verdict(tmp_path: Path) -> None:
    """Flat images give no keypoints: the check cannot say, so the pair keeps its NCC."""
    for name in ("a.png", "b.png"):
        Image.new("RGB", (400, 300), (120, 130, 140)).save(tmp_path / name)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    notes: list[str] = []
    out = confirm_copies(paths, np.array([[0, 1]]), np.array([0.93], np.float32), 0.9, notes)
    assert out.tolist() == pytest.approx([0.93]) and "0 are other views" in notes[0]


def test_only_the_ambiguous_band_is_looked_at_again(photos: list[Path]) -> None:
    coarse, fine, _ = thumbnails(photos)
    pairs = np.array([[0, 1], [0, 2]])
    ncc = pixel_scores(coarse, fine, pairs)
    assert (ncc >= PIXEL).all() and (ncc < 0.96).all(), ncc  # both in the band: the test means something
    notes: list[str] = []
    out = confirm_copies(photos, pairs, ncc, PIXEL, notes)
    assert out[0] == ncc[0]  # the copy keeps its score
    assert out[1] < MIN_SHARE <= PIXEL  # the other view drops below the threshold
    assert "2 candidate pair(s)" in notes[0] and "1 are other views" in notes[0]
    above = confirm_copies(photos, pairs, ncc, float(ncc.max()) + 0.01, [])
    assert np.array_equal(above, ncc)  # nothing in the band: nothing read, nothing changed


def test_candidate_pairs_keep_the_copy_and_drop_the_view(photos: list[Path]) -> None:
    vectors = np.ones((3, 8), np.float32)  # every pair a candidate: the pixels and keypoints decide
    notes: list[str] = []
    checked = candidate_pairs(vectors, 0.5, k=3, paths=photos, pixel=PIXEL, notes=notes)
    copies = {tuple(p) for p, s in zip(checked.pairs.tolist(), checked.ncc, strict=True) if s >= PIXEL}
    assert copies == {(0, 1)}, (checked.pairs, checked.ncc)
    assert any("other views of a scene" in n for n in notes)
