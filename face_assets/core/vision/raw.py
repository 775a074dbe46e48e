"""Camera RAW files (DNG, CR2, CR3, NEF, ARW, ORF, RW2, RAF, PEF, ...) through LibRaw (rawpy).

The embedded preview is what is decoded where it is large enough: a camera's full-size JPEG is the
picture as the photographer saw it (the camera's colours, lens corrections), and decoding it is
about 5 times faster than demosaicing (12 MP: 0.3 s against 1.5 s); with `min_side` it gets
JPEG's DCT scaling too. "Large enough" is at least `min_side` on its longer side, or, for a full
decode, at least 90 % of the sensor's output (then resized to exactly that, so that coordinates
stay those of the full size); a preview of another shape (a 16:9 crop of a 3:2 sensor) is not
the same picture and is not used. Otherwise LibRaw demosaics, at half size (each 2x2 block one
pixel) when that still gives `min_side`.

Coordinates are those of LibRaw's full-size output after the raw's flip, for both paths.
Orientation of a preview: LibRaw hands out a JPEG preview that has no EXIF of its own wrapped in
an EXIF block carrying the raw's orientation (dcraw's habit), so the JPEG's orientation is the
one to apply; where a camera's own EXIF in the preview says 1, the raw's flip is applied, and a
preview already stood up then fails the aspect check and is not used.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from face_assets.core.vision.formats import MediaDecodeError, too_many_pixels
from face_assets.core.vision.types import RGBImage

if TYPE_CHECKING:
    import rawpy

# A preview decoded in full must have this share of the sensor's longer side.
FULL_PREVIEW_SHARE = 0.9
# Previews whose aspect ratio differs more than this from the raw's are another framing.
ASPECT_TOLERANCE = 0.01
# LibRaw's flip (dcraw's convention) as the EXIF Orientation that does the same.
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
_ORIENTATION_TAG = 0x0112
# EXIF Orientation -> the transpose that stands the pixels up (as ImageOps.exif_transpose).
UPRIGHT_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class NotRaw(Exception):
    """LibRaw does not know the file for a RAW (a TIFF, say): another decoder may."""


def _reason(error: Exception) -> str:
    import rawpy

    message = error.args[0] if error.args else type(error).__name__
    text = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
    if isinstance(error, rawpy.LibRawIOError):
        text += ": the file ends early"  # what LibRaw's I/O error means once the file was opened
    return text


def _refused(path: Path, error: Exception) -> MediaDecodeError:
    return MediaDecodeError(f"{path}: not a RAW image LibRaw can decode ({_reason(error)})", photo=True)


def _open(path: Path) -> rawpy.RawPy:
    """The file opened by LibRaw (header parsed, nothing decoded); NotRaw when it is no RAW."""
    import rawpy

    raw = rawpy.RawPy()
    try:
        raw.open_file(str(path))
    except rawpy.LibRawFileUnsupportedError as error:
        raw.close()
        raise NotRaw(_reason(error)) from error
    except rawpy.LibRawError as error:
        raw.close()
        raise _refused(path, error) from error
    return raw


def identify_raw(path: Path) -> None:
    """Checks that LibRaw reads the file's header (NotRaw, or MediaDecodeError saying why not)."""
    _open(path).close()


def full_size(sizes: rawpy.ImageSizes) -> tuple[int, int]:
    """LibRaw's full-size output, upright: the visible sensor area, stretched to square pixels
    as LibRaw does, turned by the flip."""
    width, height = sizes.width, sizes.height
    if sizes.pixel_aspect < 1:
        height = int(height / sizes.pixel_aspect + 0.5)
    elif sizes.pixel_aspect > 1:
        width = int(width * sizes.pixel_aspect + 0.5)
    return (height, width) if sizes.flip & 4 else (width, height)


def decode_raw(path: Path, min_side: int | None = None) -> tuple[RGBImage, int, int]:
    """Upright RGB pixels and the full upright size they stand for (see the module's doc)."""
    import rawpy

    raw = _open(path)
    try:
        full_w, full_h = full_size(raw.sizes)
        if (bomb := too_many_pixels(path, full_w, full_h)) is not None:
            raise bomb
        preview = _preview(raw, full_w, full_h, min_side)
        if preview is not None:
            return preview, full_w, full_h
        raw.unpack()
        half = min_side is not None and min(full_w, full_h) > 0 and max(full_w, full_h) // 2 >= min_side
        pixels = raw.postprocess(
            use_camera_wb=True,  # as shot; LibRaw falls back to grey-world where the file has none
            half_size=half,
            output_bps=8,
            gamma=(2.4, 12.92),  # sRGB, as the JPEGs the models were trained on (LibRaw's default is BT.709)
            # The exposure as shot: auto-brightening would scale each picture by its own brightest 1 %.
            no_auto_bright=True,
        )
    except rawpy.LibRawError as error:
        raise _refused(path, error) from error
    finally:
        raw.close()
    if not half and pixels.shape[:2] != (full_h, full_w):
        full_h, full_w = pixels.shape[:2]  # LibRaw's own output is the full size (odd sensors)
    return np.ascontiguousarray(pixels), full_w, full_h


def _preview(raw: rawpy.RawPy, full_w: int, full_h: int, min_side: int | None) -> RGBImage | None:
    """The embedded preview, upright, when it is the same picture and large enough; else None."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    except rawpy.LibRawError:
        return None  # a broken preview: the mosaic may still be fine
    flip_orientation = _FLIP_TO_ORIENTATION.get(raw.sizes.flip, 1)
    try:
        image: Image.Image
        if thumb.format == rawpy.ThumbFormat.JPEG:
            image = Image.open(io.BytesIO(bytes(thumb.data)))
            # A preview JPEG that says how its pixels stand is believed; one that does not (the
            # usual case: DNG, CR2, NEF) is stored like the mosaic, so the raw's flip applies.
            own = image.getexif().get(_ORIENTATION_TAG, 1)
            orientation = own if own != 1 else flip_orientation
        else:
            image = Image.fromarray(_bitmap(np.asarray(thumb.data)))
            orientation = flip_orientation
        width, height = image.size
        up_w, up_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        if abs(up_w / up_h - full_w / full_h) > ASPECT_TOLERANCE * full_w / full_h:
            return None
        longest, full_longest = max(up_w, up_h), max(full_w, full_h)
        if min_side is None and longest < FULL_PREVIEW_SHARE * full_longest:
            return None
        if min_side is not None and longest < min(min_side, full_longest):
            return None
        if min_side is not None and image.format == "JPEG":
            factor = max(min_side / max(width, height), 1.0 / 8.0)
            if factor < 1.0:
                image.draft("RGB", (int(width * factor + 0.999), int(height * factor + 0.999)))
        image.load()
        upright = image.convert("RGB")
        if orientation in UPRIGHT_TRANSPOSE:
            upright = upright.transpose(UPRIGHT_TRANSPOSE[orientation])
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None  # an unreadable preview: demosaic instead
    # Exactly the raw's shape: its full size, or the decoded scale of it.
    scale = 1.0 if min_side is None else max(upright.size) / max(full_w, full_h)
    target = (max(round(full_w * scale), 1), max(round(full_h * scale), 1))
    if upright.size != target:
        upright = upright.resize(target, Image.Resampling.BILINEAR)
    return np.asarray(upright, dtype=np.uint8)


def _bitmap(data: np.ndarray) -> np.ndarray:
    """LibRaw's bitmap preview as 8-bit RGB (it may be 16-bit or one channel)."""
    if data.dtype == np.uint16:
        data = (data >> 8).astype(np.uint8)
    if data.ndim == 2:
        data = data[..., None]
    if data.shape[2] == 1:
        data = np.repeat(data, 3, axis=2)
    return np.ascontiguousarray(data[..., :3].astype(np.uint8))
