"""Every format people shoot, read by the library made for it: each file, made at test time from a
real photo in the shape a phone or camera writes, decodes to the picture its JPEG shows."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from face_assets.core.vision.heif import register_heif_opener
from face_assets.core.vision.media import identify_media, open_media
from face_assets.core.vision.photo import decode_photo
from face_assets.core.vision.transforms import MediaDecodeError, load_image
from face_assets.core.vision.video import probe_video
from face_assets_tests.conftest import TWO_FACE_PHOTO
from face_assets_tests.photo_files import (
    heif_items,
    real_photo,
    write_avif,
    write_dng,
    write_heic,
    write_jpeg,
    write_nef,
)

# The longer side of the test pictures: more than two 512-px HEIC tiles, small enough to be quick.
LONG_SIDE = 1400
# Mean absolute difference (0-255) to the JPEG of the same picture: the lossy codecs and the
# demosaicing each stay well under it; a turned, mirrored, grey-tiled or shifted picture is far
# above it (tens).
CLOSE = 3.0

# name -> (writer, the format identify_media names)
FORMATS: dict[str, tuple[Callable[[Path, NDArray[np.uint8]], Path], str]] = {
    "heic-grid": (lambda p, up: write_heic(p, up), "HEIF"),
    "heic-irot": (lambda p, up: write_heic(p, up, orientation=6), "HEIF"),
    "avif-irot": (lambda p, up: write_avif(p, up, orientation=6), "AVIF"),
    "dng-preview": (lambda p, up: write_dng(p, up, orientation=6), "DNG"),
    "dng-thumbnail": (lambda p, up: write_dng(p, up, preview="thumbnail"), "DNG"),
    "dng-android": (lambda p, up: write_dng(p, up, orientation=6, preview=None), "DNG"),
    "nef-preview": (lambda p, up: write_nef(p, up, orientation=8), "NEF"),
    "nef-mosaic": (lambda p, up: write_nef(p, up, orientation=6, preview=False), "NEF"),
}
SUFFIX = {"heic": ".heic", "avif": ".avif", "dng": ".dng", "nef": ".nef"}


@pytest.fixture(scope="module")
def picture(celebrity_folder: Path) -> NDArray[np.uint8]:
    """A real photo with two faces, enlarged: the picture every file below holds."""
    return real_photo(celebrity_folder / "train" / TWO_FACE_PHOTO, LONG_SIDE)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, picture: NDArray[np.uint8]) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("formats")
    made = {"jpeg": write_jpeg(folder / "picture.jpg", picture)}
    for name, (write, _) in FORMATS.items():
        made[name] = write(folder / f"{name}{SUFFIX[name.split('-')[0]]}", picture)
    return made


def _difference(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    assert a.shape == b.shape, f"{a.shape} != {b.shape}"
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def _resized(pixels: NDArray[np.uint8], size: tuple[int, int]) -> NDArray[np.uint8]:
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_decodes_to_the_picture_of_its_jpeg(name: str, files: dict[str, Path]) -> None:
    reference = decode_photo(files["jpeg"])
    photo = decode_photo(files[name])

    assert identify_media(files[name]) == FORMATS[name][1]
    assert (photo.full_width, photo.full_height) == (reference.full_width, reference.full_height)
    assert not photo.reduced
    assert _difference(photo.pixels, reference.pixels) < CLOSE
    assert np.array_equal(load_image(files[name]), photo.pixels)  # the callers' old entry point


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_decoded_for_a_size_maps_to_the_full_picture(name: str, files: dict[str, Path]) -> None:
    """With min_side the pixels may be fewer, never fewer than asked, and stand for the full size."""
    reference = decode_photo(files["jpeg"]).pixels
    photo = decode_photo(files[name], min_side=400)

    assert (photo.full_width, photo.full_height) == (reference.shape[1], reference.shape[0])
    assert max(photo.pixels.shape[:2]) >= 400
    assert photo.pixels.shape[0] == round(photo.full_height * photo.scale)
    size = (photo.pixels.shape[1], photo.pixels.shape[0])
    assert _difference(photo.pixels, _resized(reference, size)) < 2 * CLOSE


def test_a_tiled_heic_decodes_whole(files: dict[str, Path], picture: NDArray[np.uint8]) -> None:
    items, _ = heif_items(files["heic-grid"])
    assert items.count("grid") == 1 and items.count("hvc1") == 6  # 2 x 3 tiles of 512 px

    pixels = decode_photo(files["heic-grid"]).pixels

    assert pixels.shape == picture.shape
    for top in range(0, picture.shape[0], 512):  # every tile, not only the first
        for left in range(0, picture.shape[1], 512):
            tile = (slice(top, top + 512), slice(left, left + 512))
            assert _difference(pixels[tile], picture[tile]) < CLOSE, (top, left)


@pytest.mark.parametrize("orientation", [6, 8, 3, 5])
def test_a_heic_stored_turned_as_phones_do_comes_out_upright_once(
    orientation: int, tmp_path: Path, picture: NDArray[np.uint8]
) -> None:
    """The turn is in irot (and imir), EXIF Orientation says it again: applied once."""
    path = write_heic(tmp_path / "turned.heic", picture, orientation=orientation)
    items, properties = heif_items(path)
    assert "irot" in properties and ("imir" in properties) == (orientation in (2, 4, 5, 7))
    assert "Exif" in items
    register_heif_opener()
    with Image.open(path) as stored:
        assert stored.info["original_orientation"] == orientation  # what the EXIF block says

    photo = decode_photo(path)

    assert photo.pixels.shape == picture.shape
    assert (photo.full_width, photo.full_height) == (picture.shape[1], picture.shape[0])
    assert _difference(photo.pixels, picture) < CLOSE


def test_an_avif_stored_turned_comes_out_upright(files: dict[str, Path], picture: NDArray[np.uint8]) -> None:
    _, properties = heif_items(files["avif-irot"])
    assert "irot" in properties

    assert _difference(decode_photo(files["avif-irot"]).pixels, picture) < CLOSE


def test_a_heic_is_a_photo_not_a_one_frame_video(files: dict[str, Path], picture: NDArray[np.uint8]) -> None:
    heic = files["heic-grid"]
    video = probe_video(heic)  # FFmpeg would take it for a video of its first 512-px tile
    assert (video.width, video.height) == (512, 512)

    assert identify_media(heic) == "HEIF"
    media = open_media(heic)
    assert isinstance(media, np.ndarray) and media.shape == picture.shape


def test_a_video_under_a_photo_extension_is_still_a_video(tmp_path: Path, celebrity_folder: Path) -> None:
    """The extension only picks whose reason a bad file gets: an MP4 named .heic or .dng is an
    MP4 (neither libheif nor LibRaw keeps it from FFmpeg)."""
    from face_assets.core.vision.video import VideoInfo
    from face_assets_devtools.clips import Scene, make_clip

    clip = make_clip(tmp_path / "clip.mp4", [Scene([celebrity_folder / "train" / TWO_FACE_PHOTO], 1.0)])
    for suffix in (".heic", ".dng", ".avif"):
        disguised = tmp_path / f"clip{suffix}"
        disguised.write_bytes(clip.read_bytes())
        assert identify_media(disguised) == "MP4"
        assert isinstance(open_media(disguised), VideoInfo)


def _one_line_naming(error: pytest.ExceptionInfo[MediaDecodeError], path: Path, decoder: str) -> None:
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert decoder in message
    assert not error.value.transient  # bad bytes: final


@pytest.mark.parametrize(
    ("name", "suffix", "decoder"),
    [
        ("heic-grid", ".heic", "not a HEIF image libheif can decode"),
        ("avif-irot", ".avif", "not an AVIF image libavif can decode"),
        ("dng-preview", ".dng", "not a RAW image LibRaw can decode"),
        ("nef-mosaic", ".nef", "not a RAW image LibRaw can decode"),
    ],
)
@pytest.mark.parametrize("damage", ["header only", "garbage"])
@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")  # on the cut TIFF header
def test_a_broken_photo_file_is_named_in_one_line_with_its_decoders_reason(
    name: str, suffix: str, decoder: str, damage: str, files: dict[str, Path], tmp_path: Path
) -> None:
    data = files[name].read_bytes()
    broken = tmp_path / f"broken{suffix}"
    broken.write_bytes(data[:200] if damage == "header only" else b"shopping list\n" * 40)

    for read in (identify_media, open_media, decode_photo):
        with pytest.raises(MediaDecodeError) as error:
            read(broken)
        _one_line_naming(error, broken, decoder)


def test_a_heic_cut_short_is_refused_rather_than_decoded_with_grey_tiles(
    files: dict[str, Path], tmp_path: Path
) -> None:
    cut = tmp_path / "cut.heic"
    cut.write_bytes(files["heic-grid"].read_bytes()[: files["heic-grid"].stat().st_size // 2])

    with pytest.raises(MediaDecodeError) as error:
        open_media(cut)
    _one_line_naming(error, cut, "not a HEIF image libheif can decode (file truncated")


def test_a_raw_cut_short_in_its_mosaic_is_refused_unless_its_preview_is_whole(
    files: dict[str, Path], tmp_path: Path, picture: NDArray[np.uint8]
) -> None:
    """Directories first, then the preview, then the mosaic, as cameras write: a copy cut off in
    the mosaic still has its whole preview, which is the picture; without one it is refused."""
    for name in ("dng-android", "nef-mosaic"):
        cut = tmp_path / f"cut-{files[name].name}"
        cut.write_bytes(files[name].read_bytes()[: files[name].stat().st_size * 3 // 4])
        assert identify_media(cut) == FORMATS[name][1]  # the header is whole
        with pytest.raises(MediaDecodeError) as error:
            decode_photo(cut)
        _one_line_naming(error, cut, "not a RAW image LibRaw can decode (Input/output error: the file ends")

    cut = tmp_path / "cut-preview.nef"
    cut.write_bytes(files["nef-preview"].read_bytes()[: files["nef-preview"].stat().st_size * 3 // 4])
    reference = decode_photo(files["jpeg"]).pixels
    assert _difference(decode_photo(cut).pixels, reference) < CLOSE


def test_a_missing_raw_or_heic_is_transient(tmp_path: Path) -> None:
    for name in ("gone.heic", "gone.dng"):
        with pytest.raises(MediaDecodeError, match="file not found") as error:
            decode_photo(tmp_path / name)
        assert error.value.transient


def test_a_raw_with_a_full_jpeg_preview_is_decoded_at_a_dct_scale(files: dict[str, Path]) -> None:
    """min_side 300 on a 1400-px picture: the preview JPEG decodes at 1/4 (350 px), where
    demosaicing could only halve (700 px)."""
    for name in ("dng-preview", "nef-preview"):
        photo = decode_photo(files[name], min_side=300)
        assert photo.scale == pytest.approx(0.25, abs=0.002), name
        assert max(photo.pixels.shape[:2]) == LONG_SIDE // 4

    mosaic_only = decode_photo(files["dng-android"], min_side=300)
    assert mosaic_only.scale == pytest.approx(0.5, abs=0.002)  # half-size demosaicing


def test_a_preview_whose_own_exif_says_upright_is_turned_by_the_raws_orientation(
    tmp_path: Path, picture: NDArray[np.uint8]
) -> None:
    """A preview JPEG stored like the mosaic, with an EXIF block of its own saying 1: the raw's
    orientation (6) stands it up; the preview is used (1/4 scale), not the mosaic (1/2)."""
    path = write_dng(tmp_path / "own-exif.dng", picture, orientation=6, preview_exif=1)

    photo = decode_photo(path, min_side=300)

    assert photo.scale == pytest.approx(0.25, abs=0.002)
    size = (photo.pixels.shape[1], photo.pixels.shape[0])
    assert _difference(photo.pixels, _resized(picture, size)) < CLOSE


def test_a_smaller_preview_serves_a_small_decode_and_the_mosaic_a_full_one(
    tmp_path: Path, picture: NDArray[np.uint8]
) -> None:
    """A half-size preview: used for min_side up to its size, with coordinates of the full size;
    a full decode demosaics. Both give the same picture where they overlap."""
    path = write_dng(tmp_path / "half.dng", picture, orientation=6, preview="half")

    small = decode_photo(path, min_side=600)
    full = decode_photo(path)

    assert (small.full_width, small.full_height) == (full.full_width, full.full_height)
    assert (full.full_width, full.full_height) == (picture.shape[1], picture.shape[0])
    assert small.scale == pytest.approx(0.5, abs=0.002) and not full.reduced
    size = (small.pixels.shape[1], small.pixels.shape[0])
    assert _difference(small.pixels, _resized(full.pixels, size)) < CLOSE


def test_a_16_bit_grey_tiff_is_a_tiff_not_a_raw(tmp_path: Path, picture: NDArray[np.uint8]) -> None:
    """LibRaw takes such a TIFF for a Bayer mosaic: it has no camera's marks, so Pillow reads it."""
    grey = (np.asarray(Image.fromarray(picture).convert("L"), np.uint16) * 257).astype(np.uint16)
    path = tmp_path / "scan.tif"
    Image.fromarray(grey).save(path)

    assert identify_media(path) == "TIFF"
    pixels = decode_photo(path).pixels
    assert np.array_equal(pixels[..., 0], pixels[..., 2])  # grey, not demosaiced colours
    assert _difference(pixels[..., 0], (grey >> 8).astype(np.uint8)) < 1.0


def test_neither_libheif_nor_libraw_is_loaded_before_a_file_needs_it(files: dict[str, Path]) -> None:
    code = (
        "import sys; from face_assets.core.vision.media import open_media\n"
        "loaded = lambda: ['pillow_heif' in sys.modules, 'rawpy' in sys.modules]\n"
        "print(loaded()); open_media(sys.argv[1]); print(loaded());"
        "open_media(sys.argv[2]); print(loaded())"
    )
    args = [sys.executable, "-c", code, str(files["jpeg"]), str(files["heic-grid"])]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    # imported: nothing; after a JPEG: nothing; after a HEIC: libheif only
    assert out.stdout.split("\n")[:3] == ["[False, False]", "[False, False]", "[True, False]"]


# --- the real detector ----------------------------------------------------------------------


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _full_size_boxes(detector: object, pixels: NDArray[np.uint8], scale: float) -> list[tuple[float, ...]]:
    faces = detector.detect(pixels)  # type: ignore[attr-defined]
    return sorted(tuple(v / scale for v in face.box_xyxy) for face in faces)


@pytest.mark.slow
@pytest.mark.parametrize("min_side", [None, 640])
def test_each_format_gives_the_faces_of_its_jpeg(
    min_side: int | None, files: dict[str, Path], models_dir: Path
) -> None:
    """The real RetinaFace on each format's decode (in full, or for the detector's size with the
    boxes mapped to full-size pixels) finds the faces it finds on the JPEG at the same resolution."""
    from face_assets.core.settings import get_settings
    from face_assets.core.vision.models import detector_for

    detector = detector_for(get_settings())
    jpeg = decode_photo(files["jpeg"]).pixels

    for name in FORMATS:
        photo = decode_photo(files[name], min_side)
        size = (photo.pixels.shape[1], photo.pixels.shape[0])
        expected = _full_size_boxes(detector, _resized(jpeg, size), photo.scale)
        found = _full_size_boxes(detector, photo.pixels, photo.scale)
        assert len(expected) == 2  # the photo's two people
        assert len(found) == len(expected), name
        for box in expected:
            assert max(_iou(box, other) for other in found) >= 0.9, (name, box, found)
