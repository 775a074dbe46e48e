"""Pure image preprocessing: decoding, crops, thumbnails. No model, no database."""

from __future__ import annotations

import errno
import math
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from face_assets.core.errors import UserError
from face_assets.core.vision.types import RGBImage

# Formats Pillow decodes that count as photos; the format is sniffed, the extension ignored.
IMAGE_FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "MPO", "PPM", "ICO", "JPEG2000"})


class MediaDecodeError(UserError, ValueError):
    """A media item cannot be read as an image; the message names the file.

    `transient`: the file could not be read now (missing, permission, I/O error): it is
    retried on the next run. Otherwise its bytes are bad, and that is final.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def read_error(path: Path, error: OSError) -> MediaDecodeError:
    """The reason a file could not be read at all, as a transient error naming it."""
    if isinstance(error, FileNotFoundError):
        reason = "file not found" if not path.is_symlink() else "dangling symbolic link"
    elif isinstance(error, PermissionError):
        reason = "permission denied"
    elif error.errno == errno.ELOOP:
        reason = "symbolic link loop"
    else:
        reason = f"cannot read ({error.strerror or error})"
    return MediaDecodeError(f"{path}: {reason}", transient=True)


def _decode_error(path: Path, error: Exception) -> MediaDecodeError:
    if isinstance(error, Image.DecompressionBombError):
        # Pillow's guard against a small file that decodes to gigabytes (a "decompression bomb").
        return MediaDecodeError(f"{path}: too many pixels to decode safely ({error})")
    if isinstance(error, UnidentifiedImageError):
        empty = path.is_file() and path.stat().st_size == 0
        return MediaDecodeError(f"{path}: {'empty file' if empty else 'not an image Pillow can decode'}")
    if isinstance(error, OSError) and error.errno is not None:
        return read_error(path, error)  # the disk or share failed mid-read, not the file
    return MediaDecodeError(f"{path}: cannot decode image ({error})")


def identify_image(path: Path) -> str:
    """The real image format of a file, from its bytes; MediaDecodeError says why it is none."""
    try:
        with open(path, "rb") as handle, Image.open(handle) as image:
            media_format = image.format
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as error:
        raise _decode_error(path, error) from error
    if media_format not in IMAGE_FORMATS:
        raise MediaDecodeError(f"{path}: {media_format} is not a photo format")
    return str(media_format)


def sniff_image_format(path: Path) -> str | None:
    """The real image format of a file (from its bytes), or None if it is not an image."""
    try:
        return identify_image(path)
    except MediaDecodeError:
        return None


def load_image(path: Path) -> RGBImage:
    """Decode a media item to RGB uint8, upright according to its EXIF orientation."""
    try:
        with open(path, "rb") as handle, Image.open(handle) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
            if upright.mode in _WIDE_GRAY_MODES:
                return _wide_gray_to_rgb(upright)
            rgb = upright.convert("RGB")
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as error:
        raise _decode_error(path, error) from error
    return np.asarray(rgb, dtype=np.uint8)


# 16-bit and float grayscale: Pillow's convert("RGB") clips them instead of scaling.
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def _wide_gray_to_rgb(image: Image.Image) -> RGBImage:
    values = np.asarray(image, dtype=np.float32)
    top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0.0) > 255 else 255.0
    gray = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


# Around a face box, per side, as a share of its size: FaceNet's input and the thumbnails.
EMBEDDING_MARGIN = 0.1
THUMBNAIL_MARGIN = 0.2


def _crop_padded(image: RGBImage, x1: int, y1: int, x2: int, y2: int) -> RGBImage:
    """image[y1:y2, x1:x2] where parts outside the image are black, so crops keep their shape."""
    height, width = image.shape[:2]
    out = np.zeros((y2 - y1, x2 - x1, 3), dtype=np.uint8)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
    return out


def _resize(image: RGBImage, px: int) -> RGBImage:
    resized = Image.fromarray(image).resize((px, px), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def embedding_crop(
    image: RGBImage,
    box_xyxy: tuple[float, float, float, float],
    px: int = 160,
    margin: float = EMBEDDING_MARGIN,
) -> NDArray[np.float32]:
    """The FaceNet input for one face: box plus `margin` per side, clipped, resized, normalised.

    The box is clipped to the image rather than padded: FaceNet was trained on such crops and
    a margin of 10 % per side measured best (DESIGN.md §3).
    """
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box_xyxy
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    left = max(int(math.floor(x1 - mx)), 0)
    top = max(int(math.floor(y1 - my)), 0)
    right = min(int(math.ceil(x2 + mx)), width)
    bottom = min(int(math.ceil(y2 + my)), height)
    if right - left < 2 or bottom - top < 2:
        raise ValueError(f"face box {box_xyxy} lies outside the {width}x{height} image")
    crop = _resize(np.ascontiguousarray(image[top:bottom, left:right]), px)
    return ((crop.astype(np.float32) - 127.5) / 128.0).astype(np.float32)


def sharpness(pixels: RGBImage) -> float:
    """Variance of the Laplacian of the grey image: higher is sharper (a blur detector)."""
    grey = pixels.astype(np.float32).mean(axis=2)
    laplacian = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4.0 * grey[1:-1, 1:-1]
    return float(laplacian.var()) if laplacian.size else 0.0


def square_thumbnail(
    image: RGBImage,
    box_xyxy: tuple[float, float, float, float],
    px: int = 112,
    margin: float = THUMBNAIL_MARGIN,
) -> RGBImage:
    """A square crop centred on the face, `margin` of the longer side around it, `px` wide."""
    x1, y1, x2, y2 = box_xyxy
    side = max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    size = max(int(round(side)), 1)
    return _resize(_crop_padded(image, left, top, left + size, top + size), px)
