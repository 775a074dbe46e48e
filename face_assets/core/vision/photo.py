"""A photo decoded once, at the size its use needs: pixels upright, and the full size they stand for.

A phone's 12-50 MP JPEG costs 120 ms and more to decode in full, while the detector looks at
1,280 px at most; JPEG's DCT scaling decodes at 1/2, 1/4 or 1/8 of the size for a fraction of
the time. Coordinates stay in full-size pixels everywhere: `Photo.scale` maps them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from face_assets.core.vision.transforms import _WIDE_GRAY_MODES, _decode_error, _wide_gray_to_rgb
from face_assets.core.vision.types import RGBImage


@dataclass(frozen=True)
class Photo:
    """Upright RGB pixels and the upright size of the whole photo they were decoded from."""

    pixels: RGBImage
    full_width: int
    full_height: int

    @property
    def scale(self) -> float:
        """Decoded pixels per full-size pixel (1.0 when decoded in full)."""
        return self.pixels.shape[1] / self.full_width

    @property
    def reduced(self) -> bool:
        return self.pixels.shape[1] < self.full_width or self.pixels.shape[0] < self.full_height


def decode_photo(path: Path, min_side: int | None = None) -> Photo:
    """The photo upright (EXIF orientation applied); with `min_side`, decoded at the smallest
    scale whose longer side is still at least `min_side` where the format can (JPEG), else in
    full. MediaDecodeError names the file and the reason."""
    path = Path(path)
    try:
        with open(path, "rb") as handle, Image.open(handle) as image:
            width, height = image.size
            if min_side is not None and image.format == "JPEG":
                # draft() picks the smallest DCT scale at least this size; the aspect is kept.
                factor = max(min_side / max(width, height), 1.0 / 8.0)
                if factor < 1.0:
                    image.draft("RGB", (int(width * factor + 0.999), int(height * factor + 0.999)))
            image.load()
            upright = ImageOps.exif_transpose(image)
            full_w, full_h = (height, width) if _turned(image) else (width, height)
            if upright.mode in _WIDE_GRAY_MODES:
                return Photo(_wide_gray_to_rgb(upright), full_w, full_h)
            pixels = np.asarray(upright.convert("RGB"), dtype=np.uint8)
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as error:
        raise _decode_error(path, error) from error
    return Photo(pixels, full_w, full_h)


def _turned(image: Image.Image) -> bool:
    """EXIF orientations 5-8 swap width and height."""
    return image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
