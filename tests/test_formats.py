"""Photos as phones and cameras write them: HEIC/HEIF, AVIF and camera RAW (a DNG written here), with EXIF
orientation, capture time and GPS read back exactly as from a JPEG, through every reader that decodes images."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import ImageError
from lookalike.images import IMAGE_EXTENSIONS, READABLE, can_read, decode, find_images, load_image, sniff
from lookalike.samples import photo_exif, write_dng

TIME = "2024:05:06 07:08:09"
GPS = (52.516275, -13.377704)  # south of the equator's twin: a negative longitude must survive the round trip
FORMATS = {"jpeg": ".jpg", "heif": ".heic", "avif": ".avif"}


def _picture(size: tuple[int, int] = (96, 64)) -> Image.Image:
    """Red with a blue block in the top-left corner, so a rotation shows where the block ends up."""
    img = Image.new("RGB", size, (200, 30, 30))
    img.paste((20, 20, 220), (0, 0, size[0] // 3, size[1] // 3))
    return img


def _encode(img: Image.Image, kind: str, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    if kind != "jpeg":
        assert can_read(kind)  # registers the encoder too (lookalike registers the opener when a file needs it)
    kwargs = {"exif": exif.tobytes()} if exif is not None else {}
    img.save(buf, {"jpeg": "JPEG", "heif": "HEIF", "avif": "AVIF"}[kind], quality=92, **kwargs)
    return buf.getvalue()


def _is_blue(pixel: np.ndarray) -> bool:
    return bool(pixel[2] > 150 and pixel[0] < 100)


@pytest.mark.parametrize("kind", list(FORMATS))
def test_orientation_time_and_gps_read_back_as_from_jpeg(kind: str) -> None:
    exif = photo_exif(time=TIME, gps=GPS, orientation=6)  # 90° clockwise to view: the top-left block goes top-right
    img, meta = decode(_encode(_picture(), kind, exif), f"photo{FORMATS[kind]}")
    assert img.mode == "RGB" and img.size == (64, 96), "upright: a landscape stored with orientation 6 is portrait"
    arr = np.asarray(img)
    assert _is_blue(arr[5, -5]) and not _is_blue(arr[5, 5]) and not _is_blue(arr[-5, -5])
    assert (meta.width, meta.height) == (64, 96)
    assert meta.exif_time == "2024-05-06T07:08:09"
    assert meta.gps_lat == pytest.approx(GPS[0], abs=1e-6) and meta.gps_lon == pytest.approx(GPS[1], abs=1e-6)


@pytest.mark.parametrize("kind", ["heif", "avif"])
def test_no_exif_means_no_metadata_and_no_rotation(kind: str) -> None:
    img, meta = decode(_encode(_picture(), kind), "x")
    assert img.size == (96, 64) and _is_blue(np.asarray(img)[5, 5])
    assert meta.exif_time is None and meta.gps_lat is None and meta.gps_lon is None


def test_the_bytes_say_which_decoder() -> None:
    assert sniff(_encode(_picture(), "heif"), "renamed.jpg") == "heif"
    assert sniff(_encode(_picture(), "avif"), "renamed.jpg") == "avif"
    assert sniff(_encode(_picture(), "jpeg"), "x.jpg") is None
    assert sniff(b"\x00" * 16, "camera.NEF") == "raw", "TIFF-based RAWs are known by their extension"
    assert {".heic", ".heif", ".avif", ".dng", ".cr3", ".nef", ".arw", ".raf"} <= IMAGE_EXTENSIONS


def test_a_truncated_heic_is_a_one_line_error() -> None:
    data = _encode(_picture((256, 256)), "heif")
    with pytest.raises(ImageError) as err:
        decode(data[: len(data) // 2], "cut.heic")
    assert "cut.heic" in str(err.value) and "\n" not in str(err.value)


# --- camera RAW: a DNG written here (no camera's RAW can be had offline) --------------------------------------------


def _dng(tmp_path: Path, **kwargs: object) -> Path:
    exif = photo_exif(time=TIME, gps=GPS, orientation=6)
    return write_dng(tmp_path / "camera.dng", _picture((300, 200)), exif=exif, **kwargs)


def test_raw_uses_the_embedded_preview_when_it_covers_the_model_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rawpy

    path = _dng(tmp_path, preview=240)  # a 240×160 JPEG preview
    real = rawpy.imread

    class NoDemosaic:
        def __init__(self, raw: rawpy.RawPy) -> None:
            self.raw = raw

        def __getattr__(self, name: str) -> object:
            return getattr(self.raw, name)

        def __enter__(self) -> NoDemosaic:
            return self

        def __exit__(self, *exc: object) -> None:
            self.raw.close()

        def postprocess(self, **kwargs: object) -> None:
            pytest.fail("demosaiced despite a preview that covers the model input")

    monkeypatch.setattr(rawpy, "imread", lambda f: NoDemosaic(real(f)))
    img, meta = decode(path.read_bytes(), str(path), target=128)
    assert img.size == (160, 240), "the preview, upright (the RAW's orientation applies to it too)"
    arr = np.asarray(img)
    assert _is_blue(arr[5, -5]) and not _is_blue(arr[5, 5])
    assert (meta.width, meta.height) == (200, 300), "the sensor's size, upright, not the preview's"
    assert meta.exif_time == "2024-05-06T07:08:09"
    assert meta.gps_lat == pytest.approx(GPS[0], abs=1e-6) and meta.gps_lon == pytest.approx(GPS[1], abs=1e-6)


@pytest.mark.parametrize("preview", [None, 120])
def test_raw_demosaics_at_half_size_when_the_preview_is_missing_or_too_small(
    tmp_path: Path, preview: int | None
) -> None:
    path = _dng(tmp_path, preview=preview)
    img, meta = decode(path.read_bytes(), str(path), target=128)
    assert img.size == (100, 150), "half of the 200×300 upright sensor"
    assert (meta.width, meta.height) == (200, 300)
    arr = np.asarray(img).astype(int)
    assert _is_blue(arr[8, -8]) and not _is_blue(arr[8, 8]), "demosaiced upright"
    red = arr[-20:, :20].reshape(-1, 3).mean(0)
    assert red[0] > 2 * red[1] and red[0] > 2 * red[2], f"the red stays red through the colour pipeline: {red}"
    assert meta.exif_time == "2024-05-06T07:08:09" and meta.gps_lat == pytest.approx(GPS[0], abs=1e-6)


def test_raw_metadata_kept_only_in_the_preview_is_read(tmp_path: Path) -> None:
    """As in Fujifilm's RAF: the JPEG preview carries the EXIF (time, GPS, no orientation); the RAW's own IFD0 has
    the orientation, which then applies to the preview too."""
    path = _dng(tmp_path, preview=240, metadata_in="preview")
    img, meta = decode(path.read_bytes(), str(path), target=128)
    assert img.size == (160, 240) and _is_blue(np.asarray(img)[5, -5])
    assert meta.exif_time == "2024-05-06T07:08:09"
    assert meta.gps_lat == pytest.approx(GPS[0], abs=1e-6) and meta.gps_lon == pytest.approx(GPS[1], abs=1e-6)


def test_a_raw_without_time_or_gps_has_none(tmp_path: Path) -> None:
    """LibRaw gives a preview it extracts an EXIF header of its own with a 1970 time: that is no capture time."""
    path = write_dng(tmp_path / "plain.dng", _picture((300, 200)), preview=240)
    _, meta = decode(path.read_bytes(), str(path), target=128)
    assert (meta.exif_time, meta.gps_lat, meta.gps_lon) == (None, None, None)
    assert (meta.width, meta.height) == (300, 200)


def test_an_uncompressed_preview_is_used_too(tmp_path: Path) -> None:
    path = _dng(tmp_path, preview=240, jpeg_preview=False)
    assert decode(path.read_bytes(), str(path), target=128)[0].size == (160, 240)


def test_a_broken_raw_is_a_one_line_error(tmp_path: Path) -> None:
    data = _dng(tmp_path).read_bytes()
    for bad, name in [(b"not a raw file at all" * 10, "x.cr2"), (data[:300], "cut.dng")]:
        with pytest.raises(ImageError) as err:
            decode(bad, name)
        msg = str(err.value)
        assert msg.startswith(f"{name}: ") and "\n" not in msg and "b'" not in msg, msg


def test_cr3_and_orf_metadata_layouts() -> None:
    """CR3 keeps the EXIF IFD in a CMT2 box and the GPS IFD in CMT4 (each a TIFF of its own); ORF is TIFF under its
    own magic. Built here from those documented layouts: no such camera file can be had offline."""
    from lookalike.images import raw_meta

    full = photo_exif(time=TIME, gps=GPS)
    exif_ifd, gps_ifd = Image.Exif(), Image.Exif()
    exif_ifd.update(full.get_ifd(0x8769))
    gps_ifd.update(full.get_ifd(0x8825))

    def box(kind: bytes, payload: bytes) -> bytes:
        return (8 + len(payload)).to_bytes(4, "big") + kind + payload

    ftyp = box(b"ftyp", b"crx \x00\x00\x00\x01crx isom")
    cr3 = ftyp + box(b"moov", box(b"CMT2", exif_ifd.tobytes()[6:]) + box(b"CMT4", gps_ifd.tobytes()[6:]))
    meta = raw_meta(cr3)
    assert meta is not None and meta.exif_time == "2024-05-06T07:08:09"
    assert meta.gps_lon == pytest.approx(GPS[1], abs=1e-6)
    tiff = full.tobytes()[6:]
    orf = (b"IIRO" if tiff[:2] == b"II" else b"MMOR") + tiff[4:]
    assert raw_meta(orf).gps_lat == pytest.approx(GPS[0], abs=1e-6)  # type: ignore[union-attr]


# --- a missing decoder is a one-line message naming the package -----------------------------------------------------


@pytest.mark.parametrize(("kind", "package"), [("heif", "pillow-heif"), ("avif", "pillow-avif-plugin")])
def test_a_missing_container_decoder_is_named(kind: str, package: str, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = {"heif": "HEIF", "avif": "AVIF"}[kind]
    data = _encode(_picture(), kind)
    monkeypatch.setattr(Image, "ID", [i for i in Image.ID if i != plugin])
    monkeypatch.setitem(READABLE, kind, False)
    with pytest.raises(ImageError) as err:
        decode(data, f"phone{FORMATS[kind]}")
    msg = str(err.value)
    assert package in msg and msg.startswith(f"phone{FORMATS[kind]}: ") and "\n" not in msg


def test_a_missing_raw_decoder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _dng(tmp_path)
    monkeypatch.setitem(sys.modules, "rawpy", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(ImageError, match=r"camera\.dng: camera RAW photos need the rawpy package"):
        decode(path.read_bytes(), str(path))


# --- every reader takes them -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phone_folder(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample classes with one photo of each class saved as HEIC, one as AVIF and one as a DNG, with GPS."""
    root = tmp_path_factory.mktemp("phone") / "photos"
    for i, cls in enumerate(sorted(p.name for p in sample_dir.iterdir())):
        (root / cls).mkdir(parents=True)
        files = sorted((sample_dir / cls).glob("*.jpg"))
        for f in files[3:]:
            (root / cls / f.name).write_bytes(f.read_bytes())
        img = load_image(files[0])
        exif = photo_exif(time=TIME, gps=(10.0 + i, 20.0 + i), orientation=1)
        (root / cls / "phone.heic").write_bytes(_encode(img, "heif", exif))
        (root / cls / "android.avif").write_bytes(_encode(load_image(files[1]), "avif", exif))
        write_dng(root / cls / "camera.dng", load_image(files[2]), exif=exif, preview=160)
    (root / "broken.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    return root


def test_index_search_and_metadata_over_phone_and_camera_files(phone_folder: Path, tmp_path: Path) -> None:
    from lookalike import Index

    index = Index.build(phone_folder, tmp_path / "idx", labels="folders")
    rows = index.store.table.select(["path", "label", "gps_lat", "exif_time"]).to_pylist()
    by_name = {r["path"]: r for r in rows}
    for suffix in (".heic", ".avif", ".dng"):
        ours = [r for name, r in by_name.items() if name.endswith(suffix)]
        assert len(ours) == 4, f"{suffix}: {len(ours)} indexed"
        assert all(r["exif_time"] == "2024-05-06T07:08:09" and r["gps_lat"] is not None for r in ours)
    assert "broken.heic" not in by_name
    assert [s["path"] for s in index.store.skipped] == ["broken.heic"]
    # each class's phone/camera copies find their class among the JPEGs
    for name, row in by_name.items():
        if name.endswith((".heic", ".avif", ".dng")):
            top = index.search(phone_folder / name, k=1)[0]
            assert top.label == row["label"], f"{name} -> {top.name}"


def test_thumbnails_and_contact_sheets_read_them(phone_folder: Path, tmp_path: Path) -> None:
    from lookalike.cluster.export import contact_sheet
    from lookalike.plots import thumbnail

    files = [
        p for p in find_images(phone_folder) if p.suffix in (".heic", ".avif", ".dng") and p.parent != phone_folder
    ]
    assert len(files) == 12
    for p in files:
        tile = thumbnail(p, 64)
        assert max(tile.shape[:2]) <= 64 and tile.std() > 5, p.name
    sheet = contact_sheet(files, tmp_path / "sheet.png", thumb=64)
    assert Image.open(sheet).size[0] > 64 * 4


def test_a_heic_with_a_depth_map_is_its_photo_everywhere(sample_dir: Path, tmp_path: Path) -> None:
    """A portrait-mode HEIC carries a depth map as an auxiliary image: the vector and the local features are the
    photo's (those of the same photo without the map), never the map's, and nothing is skipped."""
    import pillow_heif

    from lookalike.index import Index
    from lookalike.samples import heic_with_depth
    from lookalike.store import FEATURES_DIR

    photo = Image.open(find_images(sample_dir)[0]).convert("RGB").resize((640, 480))
    photo.info["exif"] = photo_exif(time=TIME).tobytes()  # a photo with EXIF, as a camera's: left out of the file
    depth = np.tile(np.linspace(0, 255, 160, dtype=np.uint8), (120, 1))  # near at the left, far at the right
    folder = tmp_path / "phone"
    folder.mkdir()
    (folder / "portrait.heic").write_bytes(heic_with_depth(photo, Image.fromarray(depth)))
    photo.save(folder / "plain.heic", "HEIF", quality=80)
    heif = pillow_heif.open_heif(folder / "portrait.heic")
    (found,) = heif.info["depth_images"]  # the file holds a real depth map, which a depth-aware reader decodes
    assert np.abs(np.asarray(found.to_pillow()).astype(int) - depth).mean() < 2

    img, meta = decode((folder / "portrait.heic").read_bytes(), "portrait.heic")
    assert img.size == (640, 480) and (meta.width, meta.height) == (640, 480)
    index = Index.build(folder, tmp_path / "idx", features=True)
    assert sorted(index.names) == ["plain.heic", "portrait.heic"] and not index.report.skipped
    a, b = (index.names.index(n) for n in ("portrait.heic", "plain.heic"))
    np.testing.assert_array_equal(index.vectors[a], index.vectors[b])
    hashes = index.store.column("hash")
    stored = [np.load(index.store.path / FEATURES_DIR / f"{hashes[i]}.npz") for i in (a, b)]
    assert len(stored[0]["xy"]) > 50
    for key in stored[0].files:
        np.testing.assert_array_equal(stored[0][key], stored[1][key])
