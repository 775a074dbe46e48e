"""Pure image preprocessing: decoding, crops, thumbnails. No model, no database.

Decoding is photo.py's (each format by its own library); the names here are kept for the callers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from face_assets.core.settings import DEFAULT_THUMBNAIL_PX
from face_assets.core.vision.formats import IMAGE_FORMATS, MediaDecodeError, read_error
from face_assets.core.vision.photo import decode_photo, identify_photo
from face_assets.core.vision.types import RGBImage

__all__ = [
    "EMBEDDING_MARGIN",
    "IMAGE_FORMATS",
    "THUMBNAIL_MARGIN",
    "MediaDecodeError",
    "embedding_crop",
    "identify_image",
    "load_image",
    "read_error",
    "sharpness",
    "sniff_image_format",
    "square_thumbnail",
    "thumbnail_sharpness",
]


def identify_image(path: Path) -> str:
    """The real image format of a file, from its bytes; MediaDecodeError says why it is none."""
    return identify_photo(Path(path))


def sniff_image_format(path: Path) -> str | None:
    """The real image format of a file (from its bytes), or None if it is not an image."""
    try:
        return identify_image(path)
    except MediaDecodeError:
        return None


def load_image(path: Path) -> RGBImage:
    """Decode a media item to RGB uint8, upright, at its full size."""
    return decode_photo(Path(path)).pixels


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


def _thumbnail_square(box_xyxy: tuple[float, float, float, float], margin: float) -> tuple[int, int, int]:
    """(left, top, side) in the image of the square a thumbnail is cut from."""
    x1, y1, x2, y2 = box_xyxy
    side = max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    return int(round(cx - side / 2)), int(round(cy - side / 2)), max(int(round(side)), 1)


def square_thumbnail(
    image: RGBImage,
    box_xyxy: tuple[float, float, float, float],
    px: int = DEFAULT_THUMBNAIL_PX,
    margin: float = THUMBNAIL_MARGIN,
) -> RGBImage:
    """A square crop centred on the face, `margin` of the longer side around it, `px` wide."""
    left, top, size = _thumbnail_square(box_xyxy, margin)
    return _resize(_crop_padded(image, left, top, left + size, top + size), px)


def thumbnail_sharpness(
    image: RGBImage,
    pixels: RGBImage,
    box_xyxy: tuple[float, float, float, float],
    margin: float = THUMBNAIL_MARGIN,
) -> float:
    """`sharpness` of a face's thumbnail `pixels` (square_thumbnail of `box_xyxy` in `image`)
    over its part inside the image: the black beyond a photo's edge, where a face at the edge
    is padded, would count as the sharpest detail of all."""
    left, top, size = _thumbnail_square(box_xyxy, margin)
    height, width = image.shape[:2]
    scale = len(pixels) / size
    # Two thumbnail pixels in from the edge of the image, where resizing blends in the black.
    x1, y1 = (
        math.ceil(max(-left, 0) * scale) + 2 * (left < 0),
        math.ceil(max(-top, 0) * scale) + 2 * (top < 0),
    )
    x2 = len(pixels) - math.ceil(max(left + size - width, 0) * scale) - 2 * (left + size > width)
    y2 = len(pixels) - math.ceil(max(top + size - height, 0) * scale) - 2 * (top + size > height)
    return sharpness(pixels[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)])
