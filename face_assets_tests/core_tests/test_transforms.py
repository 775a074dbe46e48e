import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face_assets.core.vision.transforms import (
    MediaDecodeError,
    embedding_crop,
    load_image,
    sharpness,
    sniff_image_format,
    square_thumbnail,
    thumbnail_sharpness,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _write_jpeg(path: Path, width: int = 64, height: int = 48) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, "JPEG")
    return path


def test_load_image_applies_exif_orientation(tmp_path: Path) -> None:
    """Orientation 6 means 'rotate 90 degrees clockwise to display'."""
    width, height, mark = 60, 30, 10
    stored = Image.new("RGB", (width, height), BLUE)
    stored.paste(RED, (0, 0, mark, mark))  # marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, "JPEG", exif=exif, quality=95)

    pixels = load_image(path)

    assert pixels.shape == (width, height, 3) and pixels.dtype == np.uint8
    # Clockwise rotation sends stored (x, y) to (height - 1 - y, x): top-left goes to top-right.
    top_right = pixels[1 : mark - 1, height - mark + 1 : height - 1].reshape(-1, 3).mean(axis=0)
    top_left = pixels[1 : mark - 1, 1 : mark - 1].reshape(-1, 3).mean(axis=0)
    assert top_right[0] > 200 and top_right[2] < 60
    assert top_left[2] > 200 and top_left[0] < 60


def test_grayscale_png_decodes_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.new("L", (7, 5), 100).save(path)
    pixels = load_image(path)
    assert pixels.shape == (5, 7, 3) and pixels.dtype == np.uint8
    assert (pixels == 100).all()


def test_rgba_png_decodes_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    Image.new("RGBA", (4, 9), (10, 20, 30, 128)).save(path)
    pixels = load_image(path)
    assert pixels.shape == (9, 4, 3) and pixels.dtype == np.uint8
    assert (pixels == np.array([10, 20, 30], dtype=np.uint8)).all()


def test_truncated_jpeg_raises_media_decode_error(tmp_path: Path) -> None:
    path = _write_jpeg(tmp_path / "cut.jpg")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaDecodeError, match=re.escape(str(path))):
        load_image(path)


def test_text_file_named_jpg_raises_media_decode_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("not a photo\n")
    with pytest.raises(MediaDecodeError, match=re.escape(str(path))):
        load_image(path)


def test_missing_file_raises_media_decode_error(tmp_path: Path) -> None:
    path = tmp_path / "gone.jpg"
    with pytest.raises(MediaDecodeError, match=re.escape(str(path))):
        load_image(path)


def test_media_decode_error_is_a_value_error() -> None:
    assert issubclass(MediaDecodeError, ValueError)


def test_sniff_ignores_the_extension(tmp_path: Path) -> None:
    png = tmp_path / "really_png.jpg"
    Image.new("RGB", (3, 3)).save(png, "PNG")
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    assert sniff_image_format(png) == "PNG"
    assert sniff_image_format(text) is None
    assert sniff_image_format(tmp_path / "missing.png") is None


def test_embedding_crop_shape_dtype_and_scaling() -> None:
    image = np.full((100, 80, 3), 255, dtype=np.uint8)
    crop = embedding_crop(image, (20.0, 30.0, 60.0, 80.0))
    assert crop.shape == (160, 160, 3) and crop.dtype == np.float32
    np.testing.assert_allclose(crop, (255 - 127.5) / 128, rtol=0, atol=1e-6)


def test_embedding_crop_values_within_unit_range() -> None:
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    image[:, 50:] = 255
    crop = embedding_crop(image, (30.0, 30.0, 70.0, 70.0))
    assert crop.min() >= -1.0 and crop.max() <= 1.0
    assert crop.min() == pytest.approx(-127.5 / 128) and crop.max() == pytest.approx(127.5 / 128)


@pytest.mark.parametrize(
    "box", [(200.0, 200.0, 250.0, 250.0), (-100.0, -100.0, -50.0, -50.0), (120.0, 10.0, 160.0, 50.0)]
)
def test_embedding_crop_rejects_box_outside_image(box: tuple[float, float, float, float]) -> None:
    image = np.full((100, 100, 3), 128, dtype=np.uint8)
    with pytest.raises(ValueError, match="outside"):
        embedding_crop(image, box)


@pytest.mark.parametrize("px", [112, 64])
def test_square_thumbnail_pads_outside_with_black(px: int) -> None:
    image = np.full((100, 100, 3), 255, dtype=np.uint8)
    # Box over the top-left corner: the square reaches beyond the image to the top and left.
    thumb = square_thumbnail(image, (-20.0, -20.0, 30.0, 30.0), px=px)
    assert thumb.shape == (px, px, 3) and thumb.dtype == np.uint8
    assert (thumb[0, 0] == 0).all()
    assert (thumb[-1, -1] == 255).all()


def test_square_thumbnail_for_non_square_box_beyond_bottom_right() -> None:
    image = np.full((60, 90, 3), 200, dtype=np.uint8)
    thumb = square_thumbnail(image, (70.0, 40.0, 100.0, 80.0))
    assert thumb.shape == (112, 112, 3)
    assert (thumb[-1, -1] == 0).all()
    assert (thumb[0, 0] == 200).all()


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "wide.png"
    Image.fromarray(ramp).save(path)
    decoded = load_image(path)
    assert decoded.shape == (64, 64, 3) and decoded.dtype == np.uint8
    assert decoded[0, 0, 0] == 0 and decoded[-1, -1, 0] == 255
    assert abs(int(decoded[32, 0, 0]) - 128) <= 2  # the middle of the ramp stays mid-grey


def test_an_image_too_large_to_decode_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "huge.png"
    Image.new("RGB", (400, 300)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the real limit, scaled down
    with pytest.raises(MediaDecodeError, match="too many pixels") as error:
        load_image(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("corner", [(0, 0), (140, 140), (0, 140)])
def test_a_blurred_face_at_the_photos_edge_is_as_blurred_as_in_its_middle(corner: tuple[int, int]) -> None:
    """The black a thumbnail is padded with beyond the photo's edge is no detail of the face:
    a smooth face keeps its low sharpness at the edge, and a textured one its high one."""
    y, x = np.mgrid[0:200, 0:200]
    smooth = np.repeat((100 + 0.3 * x + 0.2 * y)[:, :, None], 3, axis=2).astype(np.uint8)
    grain = np.random.default_rng(0).normal(0, 20, (200, 200, 1))
    textured = np.clip(smooth + grain, 0, 255).astype(np.uint8)  # detail everywhere, alike
    middle, edge = (
        (70.0, 70.0, 130.0, 130.0),
        (float(corner[0]), float(corner[1]), corner[0] + 60.0, corner[1] + 60.0),
    )

    for image in (smooth, textured):
        inside = thumbnail_sharpness(image, square_thumbnail(image, middle), middle)
        at_edge = thumbnail_sharpness(image, square_thumbnail(image, edge), edge)
        assert at_edge == pytest.approx(inside, rel=0.25)
    padded = square_thumbnail(smooth, edge)
    assert thumbnail_sharpness(smooth, padded, edge) < 5.0 < 100.0 < sharpness(padded)
