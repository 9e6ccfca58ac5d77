"""Packed scenes: detections in three layouts, box repair, region morphology, clustering a synthetic shelf, the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance
from scipy import ndimage
from sklearn.metrics import adjusted_rand_score

from lookalike import scenes
from lookalike.cluster import hdbscan_labels
from lookalike.errors import LookalikeError
from lookalike.samples import source_photos
from lookalike.scenes import Box, box_regions, check_boxes, load_detections, parse_detections

# --- a synthetic shelf: three "products" (real photos shipped by dependencies) in blocks ----------------------------

SLOT_W, SLOT_H, BOX_W, BOX_H = 70, 120, 60, 100
LAYOUT = ["AAABBBCC", "AAABBBCC", "BBCCAAAA"]
"""Each product stands in two blocks: rows 0-1 and row 2 touch only diagonally, across a whole slot."""


def _product_faces() -> dict[str, Image.Image]:
    photos = source_photos()
    names = [n for n in ("temple", "flower", "portrait", "package") if n in photos][:3]
    assert len(names) == 3, "lookalike.samples needs three source photos"
    faces = {}
    for letter, name in zip("ABC", names, strict=True):
        img = Image.open(photos[name]).convert("RGB")
        w, h = img.size
        side = min(w, h)
        faces[letter] = img.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))
    return faces


def make_shelf(
    seed: int = 0, layout: list[str] = LAYOUT, faces: dict[str, Image.Image] | None = None
) -> tuple[Image.Image, list[list[int]], list[str]]:
    """The shelf photo, its boxes as [x1, y1, x2, y2] (a few px of detector jitter) and each box's true product."""
    rng = np.random.default_rng(seed)
    faces = faces or _product_faces()
    cols, rows = len(layout[0]), len(layout)
    shelf = Image.new("RGB", (cols * SLOT_W + 10, rows * SLOT_H + 10), (205, 200, 190))
    boxes, truth = [], []
    for r, line in enumerate(layout):
        shelf.paste((90, 90, 100), (0, (r + 1) * SLOT_H - 8, shelf.width, (r + 1) * SLOT_H))  # the shelf board
        for c, letter in enumerate(line):
            face = faces[letter]
            # Every item is the same product photographed slightly differently: a small crop shift and lighting.
            s = face.width
            dx, dy = (int(v) for v in rng.integers(-s // 25, s // 25 + 1, size=2))
            item = face.crop((s // 20 + dx, s // 20 + dy, s - s // 20 + dx, s - s // 20 + dy)).resize((BOX_W, BOX_H))
            item = ImageEnhance.Brightness(item).enhance(float(rng.uniform(0.9, 1.1)))
            x, y = c * SLOT_W + 5, r * SLOT_H + 8
            shelf.paste(item, (x, y))
            j = rng.integers(-2, 3, size=4)
            boxes.append([int(x + j[0]), int(y + j[1]), int(x + BOX_W + j[2]), int(y + BOX_H + j[3])])
            truth.append(letter)
    return shelf, boxes, truth


@pytest.fixture(scope="module")
def shelf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    img, boxes, truth = make_shelf()
    folder = tmp_path_factory.mktemp("shelf")
    img.save(folder / "shelf.png")
    (folder / "boxes.json").write_text(
        json.dumps({f"b{i:02d}": dict(zip(("x1", "y1", "x2", "y2"), b, strict=True)) for i, b in enumerate(boxes)})
    )
    return folder / "shelf.png", folder / "boxes.json", truth


@pytest.fixture(scope="module")
def shelf_scene(shelf):  # noqa: ANN001, ANN201
    image, boxes, _ = shelf
    return scenes.run_scene(image, boxes, out=image.parent / "overlay.png")


def test_shelf_clusters_recover_the_products(shelf, shelf_scene) -> None:
    _, _, truth = shelf
    labels = shelf_scene.labels
    assert len(shelf_scene.clusters) == 3
    assert not shelf_scene.noise
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)
    assert sorted(len(c.boxes) for c in shelf_scene.clusters) == sorted(
        sum(line.count(p) for line in LAYOUT) for p in "ABC"
    )


def test_shelf_regions_are_the_blocks(shelf, shelf_scene) -> None:
    _, _, truth = shelf
    ids = [b.id for b in shelf_scene.boxes]
    product_of = dict(zip(ids, truth, strict=True))
    for cluster in shelf_scene.clusters:
        # Every product stands in two blocks; each region holds one whole block and nothing else.
        assert len(cluster.regions) == 2
        blocks = sorted(sorted(r.boxes) for r in cluster.regions)
        assert sorted(i for b in blocks for i in b) == sorted(cluster.boxes)
        letter = product_of[cluster.boxes[0]]
        expected = []
        for in_block in (lambda r: r < 2, lambda r: r == 2):
            expected.append(
                sorted(
                    f"b{r * len(LAYOUT[0]) + c:02d}"
                    for r, line in enumerate(LAYOUT)
                    for c, p in enumerate(line)
                    if p == letter and in_block(r)
                )
            )
        assert blocks == sorted(expected)
        for region in cluster.regions:
            xs = [p[0] for p in region.polygon]
            ys = [p[1] for p in region.polygon]
            assert (min(xs), min(ys), max(xs), max(ys)) == pytest.approx(region.bbox, abs=1)


def test_overlay_and_json(shelf_scene) -> None:
    overlay = Path(shelf_scene.overlay)
    with Image.open(overlay) as img:
        assert img.format == "PNG" and img.width > 200
    data = json.loads(json.dumps(shelf_scene.to_dict()))
    assert {c["size"] for c in data["clusters"]} == {len(c.boxes) for c in shelf_scene.clusters}
    assert all(r["polygon"] and len(r["bbox"]) == 4 for c in data["clusters"] for r in c["regions"])
    assert [b["number"] for b in data["boxes"]] == list(range(1, len(LAYOUT) * len(LAYOUT[0]) + 1))
    assert data["settings"]["model"] == "efficientnet-lite0"


def _label_face() -> Image.Image:
    """A made-up product label: red stripes on yellow around a blue disc."""
    img = Image.new("RGB", (400, 400), (240, 220, 40))
    draw = ImageDraw.Draw(img)
    for y in range(0, 400, 50):
        draw.rectangle((0, y, 400, y + 22), fill=(200, 30, 30))
    draw.ellipse((120, 120, 280, 280), fill=(20, 60, 160))
    return img


def test_second_pass_rescues_products_with_two_facings() -> None:
    # A, B, C stand 6 times each; D (the package photo) and E (a made-up label) only twice: below --min-size 3
    faces = _product_faces()
    package = Image.open(source_photos()["package"]).convert("RGB")
    w, h = package.size
    side = min(w, h)
    faces["D"] = package.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))
    faces["E"] = _label_face()
    layout = ["AAABBBCCDD", "AAABBBCCEE"]
    img, xyxy, truth = make_shelf(layout=layout, faces=faces)
    boxes = [Box(f"b{i:02d}", i + 1, *b) for i, b in enumerate(xyxy)]
    describer = scenes.scene_describer()
    pairs = [i for i, t in enumerate(truth) if t in "DE"]
    # the first pass alone cannot find them: both pairs are its noise
    first = hdbscan_labels(describer.describe_images(scenes.crops(img, boxes)), 3, second_pass=False)
    assert (first[pairs] < 0).all() and (first[[i for i in range(len(truth)) if i not in pairs]] >= 0).all()

    scene = scenes.analyse_scene(img, boxes, describer=describer, min_size=3)
    assert not scene.noise
    assert adjusted_rand_score(truth, scene.labels) == pytest.approx(1.0)
    by_product = {truth[int(np.flatnonzero(scene.labels == c.id)[0])]: c for c in scene.clusters}
    assert sorted(by_product) == ["A", "B", "C", "D", "E"]
    for letter in "DE":
        cluster = by_product[letter]
        assert sorted(cluster.boxes) == [boxes[i].id for i, t in enumerate(truth) if t == letter]
        assert len(cluster.regions) == 1  # the two facings stand side by side: one region


# --- detections: three layouts and bad files -------------------------------------------------------------------


def test_three_formats_give_the_same_boxes() -> None:
    corners = [[10, 20, 50, 80], [60, 20, 100, 90]]
    as_dict = parse_detections({"a": {"x1": 10, "y1": 20, "x2": 50, "y2": 80}, "b": dict(x1=60, x2=100, y1=20, y2=90)})
    as_xyxy = parse_detections(corners)
    as_coco = parse_detections([[10, 20, 40, 60], [60, 20, 40, 70]], "coco")
    coco_file = parse_detections(
        {"annotations": [{"id": 7, "bbox": [10, 20, 40, 60]}, {"id": 9, "bbox": [60, 20, 40, 70]}]}
    )
    for boxes in (as_dict, as_xyxy, as_coco, coco_file):
        assert [b.xyxy for b in boxes] == corners
        assert [b.number for b in boxes] == [1, 2]
    assert [b.id for b in as_dict] == ["a", "b"]
    assert [b.id for b in as_xyxy] == ["0", "1"]
    assert [b.id for b in coco_file] == ["7", "9"]
    assert [b.xyxy for b in parse_detections({"p": [1, 2, 30, 40]})] == [[1, 2, 30, 40]]
    assert [b.id for b in parse_detections([{"id": "z", "x1": 0, "y1": 0, "x2": 5, "y2": 5}])] == ["z"]


def test_auto_refuses_lists_that_look_like_coco() -> None:
    coco_like = [[500, 300, 120, 200], [640, 300, 110, 190], [10, 10, 40, 40]]
    with pytest.raises(LookalikeError, match="--format coco"):
        parse_detections(coco_like)
    assert len(parse_detections(coco_like, "xyxy")) == 3  # the user said corners: swapped later, not refused


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        ("boxes", "auto", "expected a JSON object"),
        ({"a": {"x1": 1, "y1": 2, "x2": 3}}, "auto", "lacks y2"),
        ({"a": {"x1": "left", "y1": 2, "x2": 3, "y2": 4}}, "auto", "not a finite number"),
        ({"a": {"x1": float("nan"), "y1": 2, "x2": 3, "y2": 4}}, "auto", "not a finite number"),
        ([[1, 2, 3]], "auto", "4 numbers"),
        ([{"id": "a", "x1": 0, "y1": 0, "x2": 5, "y2": 5}] * 2, "auto", "more than once"),
        ({"a": [1, 2, 3, 4]}, "dict", "--format xyxy"),
        ({"annotations": [{"bbox": [0, 0, 5, 5]}]}, "xyxy", "COCO file"),
        ([{"box": [0, 0, 5, 5]}], "coco", "no 'bbox'"),
        ([[0, 0, 5, 5]], "yolo", "unknown detections format"),
    ],
)
def test_malformed_detections(data, fmt, message) -> None:  # noqa: ANN001
    with pytest.raises(LookalikeError, match=message):
        parse_detections(data, fmt)


def test_detection_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    assert load_detections(empty) == []
    for text in ("{}", "[]"):
        (tmp_path / "e.json").write_text(text)
        assert load_detections(tmp_path / "e.json") == []
    broken = tmp_path / "broken.json"
    broken.write_text('{"a": {"x1": 1,,}}')
    with pytest.raises(LookalikeError, match=r"not valid JSON \(line 1"):
        load_detections(broken)
    with pytest.raises(LookalikeError, match="not found"):
        load_detections(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": {"x1": 1}}')
    with pytest.raises(LookalikeError, match=r"bad\.json: detections: box 'a' lacks"):
        load_detections(bad)


def test_check_boxes_swaps_clips_and_skips() -> None:
    boxes = [
        Box("ok", 1, 10, 10, 50, 50),
        Box("reversed", 2, 50, 60, 10, 20),
        Box("overhang", 3, -20, 90, 40, 130),
        Box("outside", 4, 150, 10, 200, 50),
        Box("flat", 5, 10, 10, 10, 50),
        Box("sliver", 6, 99.5, 10, 130, 50),
    ]
    checked = check_boxes(boxes, width=100, height=100)
    assert {b.id: b.xyxy for b in checked.boxes} == {
        "ok": [10, 10, 50, 50],
        "reversed": [10, 20, 50, 60],
        "overhang": [0, 90, 40, 100],
    }
    skipped = {s["id"]: s["reason"] for s in checked.skipped}
    assert set(skipped) == {"outside", "flat", "sliver"}
    assert skipped["outside"].startswith("outside the image")
    assert skipped["flat"].startswith("empty box")
    assert skipped["sliver"].startswith("too small")
    notes = {a["id"]: a["note"] for a in checked.adjusted}
    assert "swapped" in notes["reversed"] and "clipped" in notes["overhang"]
    assert [b.number for b in checked.boxes] == [1, 2, 3]  # numbers stay those of the file


# --- regions -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ey", "ex"), [(1, 1), (4, 7), (8, 6), (13, 12)])
def test_separable_closing_equals_binary_closing(ey: int, ex: int) -> None:
    rng = np.random.default_rng(ey * 31 + ex)
    mask = np.zeros((90, 80), dtype=bool)
    for _ in range(15):
        y, x = rng.integers(0, 80, size=2)
        mask[y : y + rng.integers(2, 15), x : x + rng.integers(2, 15)] = True
    expected = ndimage.binary_closing(mask, structure=np.ones((ey, ex), dtype=bool))
    assert np.array_equal(scenes.separable_closing(mask, ey, ex), expected)


def test_regions_join_neighbours_and_stop_at_other_products() -> None:
    # One row: a a b a ... a, plus an 'a' under the first pair across a small gap (a shelf board).
    row = [[0, 0, 100, 200], [105, 0, 205, 200], [210, 0, 310, 200], [315, 0, 415, 200], [600, 0, 700, 200]]
    xyxy = np.array([*row, [0, 230, 100, 430]], dtype=float)
    labels = np.array([0, 0, 1, 0, 0, 0])
    regions, maps = box_regions(xyxy, labels, list("pqrstu"), 800, 450)
    a = regions[0]
    assert [sorted(r.boxes) for r in a] == [["p", "q", "u"], ["s"], ["t"]]
    assert a[0].bbox == [0, 0, 205, 430]  # touches the image border and is not eroded there
    assert a[0].polygon == [[0, 0], [205, 0], [205, 200], [100, 200], [100, 430], [0, 430]]
    assert [r.boxes for r in regions[1]] == [["r"]]
    assert maps.labels[0].max() == 3


def test_closing_carves_out_a_narrow_box_of_another_product() -> None:
    # Two boxes of product 0 around a thin box of product 1: the gap is within the closing element, but it is taken.
    xyxy = np.array([[0, 0, 100, 100], [140, 0, 240, 100], [100, 0, 140, 100], [300, 0, 400, 100]], dtype=float)
    joined, _ = box_regions(xyxy, np.array([0, 0, -1, 1]), list("abcd"), 400, 100, gap=0.5)
    assert [sorted(r.boxes) for r in joined[0]] == [["a"], ["b"]]
    unrelated, _ = box_regions(xyxy[[0, 1, 3]], np.array([0, 0, 1]), list("abd"), 400, 100, gap=0.5)
    assert [sorted(r.boxes) for r in unrelated[0]] == [["a", "b"]]
    apart, _ = box_regions(xyxy[[0, 1, 3]], np.array([0, 0, 1]), list("abd"), 400, 100, gap=0.2)
    assert len(apart[0]) == 2


def test_colours_are_distinct_and_not_the_noise_grey() -> None:
    colours = scenes.cluster_colours(40)
    assert len(set(colours)) == 40
    assert scenes.NOISE_COLOUR not in colours


# --- few boxes, the describer, the CLI ----------------------------------------------------------------------------


def test_zero_and_one_box_need_no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing should be embedded")

    monkeypatch.setattr(scenes, "scene_describer", no_model)
    img = Image.new("RGB", (120, 80), (100, 150, 200))
    for boxes in ([], [Box("only", 1, 10, 10, 60, 70)], [Box("in", 1, 10, 10, 60, 70), Box("out", 2, 500, 0, 600, 9)]):
        scene = scenes.analyse_scene(img, boxes)
        assert scene.clusters == []
        assert scene.noise == [b.id for b in boxes[:1]]
        assert scene.notes
        out = scenes.draw_scene(scene, img, tmp_path / f"s{len(boxes)}.png")
        assert out.stat().st_size > 0


def test_scene_describer_mean_pools_a_projection_head(monkeypatch: pytest.MonkeyPatch) -> None:
    class Head:
        name, feature_dim, stride, default_resolution = "head", 8, 32, 64
        default_pooling = "mean"  # what a trained model with a projection head advertises

        def config(self) -> dict:
            return {"name": "head"}

        def features(self, batch: np.ndarray) -> np.ndarray:
            return -np.ones((len(batch), 8, 1, 1), np.float32)  # negative components: GeM would zero them

    import lookalike.models

    monkeypatch.setattr(lookalike.models, "create_model", lambda name, **kw: Head())
    d = scenes.scene_describer("some/trained/dir")
    assert d.pooling.config()["name"] == "mean"
    vec = d.describe_images([Image.new("RGB", (40, 60))])
    assert np.allclose(vec, -1 / np.sqrt(8))


def test_bad_parameters() -> None:
    img = Image.new("RGB", (50, 50))
    with pytest.raises(LookalikeError, match="min-size"):
        scenes.analyse_scene(img, [], min_size=1)
    with pytest.raises(LookalikeError, match="gap"):
        scenes.analyse_scene(img, [], gap=-1)


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``lookalike`` as a user does (through main(), which turns errors into one line), capturing its output."""
    from lookalike.cli import main

    monkeypatch.setattr(sys, "argv", ["lookalike", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_scene_json_and_table(shelf, monkeypatch, capsys, tmp_path: Path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from lookalike.cli import app

    image, boxes, _ = shelf
    out = tmp_path / "o.png"
    result = CliRunner().invoke(app, ["scene", str(image), "--detections", str(boxes), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(data["clusters"]) == 3 and data["overlay"] == str(out) and out.is_file()
    # The same boxes as a COCO list give the same clusters.
    coco = tmp_path / "coco.json"
    coco.write_text(
        json.dumps(
            [[b["box"][0], b["box"][1], b["box"][2] - b["box"][0], b["box"][3] - b["box"][1]] for b in data["boxes"]]
        )
    )
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = _cli(monkeypatch, capsys, "scene", image, "-d", coco, "--format", "coco")
    assert code == 0
    assert "3 clusters of 24 boxes" in stdout
    assert (tmp_path / "shelf-scene.png").is_file()  # the default overlay name, in the working directory


def test_cli_bad_inputs_are_one_line(shelf, monkeypatch, capsys, tmp_path: Path) -> None:  # noqa: ANN001
    image, _, _ = shelf
    monkeypatch.chdir(tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    missing_image = tmp_path / "nope.jpg"
    coco_like = tmp_path / "coco.json"
    coco_like.write_text(json.dumps([[400, 200, 60, 100], [300, 200, 60, 100]]))
    for args, expected in [
        (["scene", image, "-d", broken], "not valid JSON"),
        (["scene", image, "-d", tmp_path / "none.json"], "detections file not found"),
        (["scene", missing_image, "-d", coco_like, "--format", "coco"], "cannot read"),
        (["scene", image, "-d", coco_like], "--format coco"),
        (["scene", image, "-d", coco_like, "--format", "coco", "--out", broken / "o.png"], "cannot write the overlay"),
    ]:
        code, _, err = _cli(monkeypatch, capsys, *args)
        assert code == 1
        assert expected in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"solo": {"x1": 5, "y1": 5, "x2": 60, "y2": 90}, "gone": [9000, 0, 9100, 50]}))
    code, stdout, err = _cli(monkeypatch, capsys, "scene", image, "-d", one, "--format", "xyxy", "--json")
    assert code == 0
    data = json.loads(stdout)
    assert data["noise"] == ["solo"] and data["clusters"] == []
    assert data["skipped"][0]["id"] == "gone" and "skipped box gone: outside the image" in err
