"""Discovery, decoding (orientation, modes, draft mode, bad files) and EXIF metadata."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import piexif
import pytest
from PIL import Image

from lookalike.errors import ImageError, LookalikeError
from lookalike.images import decode, find_images, gps_from_exif, letterbox, load_image, read_meta


def _jpeg(size=(64, 48), color=(200, 30, 30), exif: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, color)
    img.paste((20, 20, 220), (0, 0, size[0] // 2, size[1] // 4))  # asymmetric so orientation is visible
    kwargs = {"exif": exif} if exif else {}
    img.save(buf, "JPEG", quality=95, **kwargs)
    return buf.getvalue()


def test_find_images_recursive_any_case_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".lookalike").mkdir()
    for name in ["x.JPG", "a/y.png", "a/b/z.WebP", "a/b/t.tiff", "a/notes.txt", ".lookalike/hidden.jpg", "a/.dot.jpg"]:
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a/b/t.tiff", "a/b/z.WebP", "a/y.png", "x.JPG"]


def test_find_images_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(LookalikeError, match="not found"):
        find_images(tmp_path / "nope")


def test_exif_orientation_applied() -> None:
    exif = piexif.dump({"0th": {piexif.ImageIFD.Orientation: 6}})
    img, meta = decode(_jpeg((64, 48), exif=exif))
    assert img.size == (48, 64)  # rotated upright
    assert (meta.width, meta.height) == (48, 64)
    # the blue block (top-left before rotation) is now at the top-right
    arr = np.asarray(img)
    assert arr[2, -2, 2] > 150 and arr[2, 2, 2] < 100


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA", "1"])
def test_any_mode_becomes_rgb(mode: str) -> None:
    src = Image.new("RGB", (40, 30), (10, 120, 240))
    if mode == "I;16":
        img = Image.frombytes("I;16", (40, 30), (np.arange(1200).reshape(30, 40) * 50).astype("<u2").tobytes())
        fmt = "PNG"
    else:
        img = src.convert(mode)
        fmt = "TIFF" if mode == "CMYK" else "PNG"
    buf = io.BytesIO()
    img.save(buf, fmt)
    out, _ = decode(buf.getvalue(), f"x.{fmt.lower()}")
    assert out.mode == "RGB" and out.size == (40, 30)
    if mode == "I;16":
        arr = np.asarray(out)
        assert arr.min() == 0 and arr.max() == 255  # 16-bit range stretched, not clipped to white


def test_jpeg_draft_mode_decodes_small() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (90, 90, 90)).save(buf, "JPEG")
    img, meta = decode(buf.getvalue(), "big.jpg", target=224)
    assert (meta.width, meta.height) == (4000, 3000)
    assert min(img.size) >= 224 and img.size[0] <= 1000  # decoded at 1/8 or 1/4, never full size


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"this is not an image at all\n" * 10, "not an image"),
        (_jpeg((200, 200))[:300], "truncated|unreadable|corrupt"),
    ],
)
def test_bad_bytes_one_line_error(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message) as err:
        decode(data, "bad.jpg")
    assert "\n" not in str(err.value)


def test_tiny_image_refused() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    with pytest.raises(ImageError, match="too small"):
        decode(buf.getvalue(), "dot.png")


def test_decompression_bomb_refused_20000px() -> None:
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")  # 400 Mpx, a few KB on disk
    with pytest.raises(ImageError, match="too many pixels"):
        decode(buf.getvalue(), "bomb.png")


def _gps_exif(lat: float, lon: float) -> bytes:
    def dms(x: float) -> tuple:
        x = abs(x)
        d = int(x)
        m = int((x - d) * 60)
        s = round(((x - d) * 60 - m) * 60 * 100)
        return ((d, 1), (m, 1), (s, 100))

    gps = {
        piexif.GPSIFD.GPSLatitudeRef: b"N" if lat >= 0 else b"S",
        piexif.GPSIFD.GPSLatitude: dms(lat),
        piexif.GPSIFD.GPSLongitudeRef: b"E" if lon >= 0 else b"W",
        piexif.GPSIFD.GPSLongitude: dms(lon),
    }
    exif = {"GPS": gps, "Exif": {piexif.ExifIFD.DateTimeOriginal: b"2024:05:06 07:08:09"}}
    return piexif.dump(exif)


def test_gps_and_time_read_as_decimal_degrees() -> None:
    _, meta = decode(_jpeg(exif=_gps_exif(30.627650, -119.738767)))
    assert meta.gps_lat == pytest.approx(30.62765, abs=1e-5)
    assert meta.gps_lon == pytest.approx(-119.738767, abs=1e-5)
    assert meta.exif_time == "2024-05-06T07:08:09"


def test_malformed_gps_ignored() -> None:
    assert gps_from_exif({1: b"N", 2: ((95, 1), (0, 1), (0, 1)), 3: b"E", 4: ((10, 1), (0, 1), (0, 1))}) == (None, None)
    assert gps_from_exif({1: b"N", 2: ((10, 0), (0, 1), (0, 1)), 3: b"E", 4: ((10, 1), (0, 1), (0, 1))}) == (None, None)
    assert gps_from_exif({1: b"N", 2: "garbage", 3: b"E", 4: ((10, 1),)}) == (None, None)
    assert gps_from_exif({}) == (None, None)
    img = Image.open(io.BytesIO(_jpeg()))
    assert read_meta(img).gps_lat is None


def test_letterbox_keeps_aspect_and_reports_valid_area() -> None:
    img = Image.new("RGB", (300, 150), (255, 0, 0))
    arr, valid = letterbox(img, 224)
    assert arr.shape == (224, 224, 3) and valid == (112, 224)
    assert (arr[:112] == [255, 0, 0]).all() and (arr[112:] == 127).all()


def test_load_image_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "nope.jpg")


# --- the one image-size policy (lookalike.images.size_policy) -----------------------------------------------------


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) is patched to claim ``width``×``height``: a header-only giant."""
    data = bytearray(_jpeg((64, 48)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_size_policy_jpeg_over_pillow_limit_allowed_and_drafted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scaled-down limits: a JPEG over the full-decode limit decodes at a DCT scale that fits it; a PNG of the same
    size is refused; a JPEG over the JPEG limit is refused too, with the same message form."""
    import lookalike.images.pillow as images  # where the size policy reads its limits

    monkeypatch.setattr(images, "MAX_PIXELS", 300 * 200 - 1)
    monkeypatch.setattr(images, "MAX_JPEG_PIXELS", 1000 * 1000)
    img, meta = decode(_jpeg((640, 400)), "big.jpg")  # 256,000 px > 59,999: needs 1/4 to fit (1/2 is 64,000)
    assert (meta.width, meta.height) == (640, 400)
    assert img.size == (160, 100)
    img, _ = decode(_jpeg((640, 400)), "big.jpg", target=16)  # the model's target can ask for smaller still
    assert img.size == (80, 50)
    buf = io.BytesIO()
    Image.new("RGB", (640, 400)).save(buf, "PNG")
    with pytest.raises(ImageError, match=r"too many pixels .*limit for a PNG.* is 59,999 px"):
        decode(buf.getvalue(), "big.png")
    with pytest.raises(ImageError, match=r"too many pixels .*limit for a JPEG is 1,000,000 px"):
        decode(_jpeg((1100, 1000)), "huge.jpg")


def test_size_policy_real_limits_on_headers() -> None:
    """At the shipped limits, from headers alone: a 120 Mpx PNG (allowed at index time before) and a 300 Mpx JPEG
    are refused before decoding; a 180 Mpx JPEG (over Pillow's 178 Mpx) is decoded, at half scale."""
    from lookalike.images import MAX_JPEG_PIXELS, MAX_PIXELS

    assert MAX_PIXELS == Image.MAX_IMAGE_PIXELS and MAX_JPEG_PIXELS >= 250_000_000
    png = io.BytesIO()
    Image.new("1", (12000, 10000)).save(png, "PNG")
    with pytest.raises(ImageError, match="too many pixels"):
        decode(png.getvalue(), "bomb.png")
    with pytest.raises(ImageError, match="too many pixels"):
        decode(_jpeg_claiming(20000, 15000), "huge.jpg")
    img, meta = decode(_jpeg_claiming(15000, 12000), "big.jpg")  # libjpeg pads the missing scan data with grey
    assert (meta.width, meta.height) == (15000, 12000) and img.size == (7500, 6000)


@pytest.mark.slow
def test_140_megapixel_jpeg_decodes_in_draft_mode() -> None:
    """A real 140 Mpx JPEG (a medium-format photo's size): decoded at half scale without a target, at 1/8 for the
    model, with its true size in the metadata."""
    buf = io.BytesIO()
    Image.new("L", (14000, 10000), 128).save(buf, "JPEG", quality=50)
    img, meta = decode(buf.getvalue(), "big.jpg")
    assert (meta.width, meta.height) == (14000, 10000) and img.size == (7000, 5000) and img.mode == "RGB"
    img, _ = decode(buf.getvalue(), "big.jpg", target=320)
    assert img.size == (1750, 1250)
