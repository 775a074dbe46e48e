"""A photo decoded once, at the size its use needs: pixels upright, and the full size they stand for.

A phone's 12-50 MP JPEG costs 120 ms and more to decode in full, while the detector looks at
1,280 px at most; JPEG's DCT scaling decodes at 1/2, 1/4 or 1/8 of the size for a fraction of
the time. Coordinates stay in full-size pixels everywhere: `Photo.scale` maps them.

Each format is read by the library made for it, chosen by the file's bytes: camera RAW by LibRaw
(raw.py), HEIC/HEIF by libheif and AVIF by libavif through Pillow (heif.py), the rest by Pillow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
from PIL import Image, ImageOps

from face_assets.core.vision import heif, raw
from face_assets.core.vision.formats import (
    AVIF_EXTENSIONS,
    HEIF_EXTENSIONS,
    IMAGE_FORMATS,
    RAW_EXTENSIONS,
    MediaDecodeError,
    Sniffed,
    pillow_error,
    read_error,
    sniff,
)
from face_assets.core.vision.types import RGBImage

# Formats whose decoder can decode at a reduced size: JPEG (and MPO, JPEGs) by DCT scaling,
# HEIF by an embedded thumbnail that is a scaled copy (pillow-heif's draft).
_DRAFT_FORMATS = frozenset({"JPEG", "MPO", "HEIF"})
T = TypeVar("T")
_PILLOW_ERRORS = (Image.DecompressionBombError, OSError, ValueError, SyntaxError, RuntimeError)


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
    """The photo upright; with `min_side`, decoded at the smallest scale whose longer side is
    still at least `min_side` where the format can (JPEG, a RAW's JPEG preview or half-size
    demosaicing, a HEIF thumbnail), else in full. Without it, the pixels are the full size.
    MediaDecodeError names the file and the reason."""
    path = Path(path)
    return _read(
        path,
        lambda _: Photo(*raw.decode_raw(path, min_side)),
        lambda image, handle: _decode_pillow(image, handle, path, min_side),
    )


def identify_photo(path: Path) -> str:
    """The real format of a photo file (JPEG, HEIF, AVIF, DNG, NEF, ...), from its bytes, without
    decoding its pixels; MediaDecodeError says why it is none."""
    path = Path(path)
    return _read(
        path, lambda sniffed: _raw_format(path, sniffed), lambda image, _: _pillow_format(path, image)
    )


def _pillow_format(path: Path, image: Image.Image) -> str:
    if image.format not in IMAGE_FORMATS:
        raise MediaDecodeError(f"{path}: {image.format} is not a photo format")
    return str(image.format)


def _raw_format(path: Path, sniffed: Sniffed) -> str:
    raw.identify_raw(path)
    return sniffed.name or "RAW"  # "RAW": LibRaw knows it, by bytes `sniff` does not know


def _read(
    path: Path, read_raw: Callable[[Sniffed], T], read_image: Callable[[Image.Image, BinaryIO], T]
) -> T:
    """The file handed to the reader of its kind: LibRaw for a RAW (by its bytes, or by its
    extension when Pillow cannot open it), else Pillow (with libheif's opener for ISO-BMFF)."""
    try:
        with open(path, "rb") as handle:
            sniffed = sniff(handle)
            if sniffed.kind == "raw":
                try:
                    return read_raw(sniffed)
                except raw.NotRaw as refusal:
                    if sniffed.certain:
                        raise _raw_refusal(path, refusal, photo=True) from None
                    # A TIFF with a camera's marks that LibRaw refuses: Pillow's.
            if sniffed.kind in ("heif", "bmff"):
                heif.register_heif_opener()  # on the first such file: a JPEG-only run never loads libheif
            try:
                image = Image.open(handle)
            except _PILLOW_ERRORS as error:
                if _read_failure(error):
                    raise
                if _maybe_raw(path, sniffed):
                    try:
                        return read_raw(sniffed)
                    except raw.NotRaw as refusal:
                        raise _raw_refusal(path, refusal, photo=sniffed.kind == "raw") from error
                raise _refusal(path, sniffed, error) from error
            with image:
                return read_image(image, handle)
    except OSError as error:
        raise read_error(path, error) from error


def _decode_pillow(image: Image.Image, handle: BinaryIO, path: Path, min_side: int | None) -> Photo:
    media_format = image.format
    if media_format == "HEIF" and (cut := heif.truncated(handle)) is not None:
        raise _decoder_refusal(path, "HEIF", cut)
    try:
        return _pixels(image, min_side)
    except _PILLOW_ERRORS as error:
        if _read_failure(error):
            raise
        if media_format in ("HEIF", "AVIF"):
            raise _decoder_refusal(path, media_format, str(error)) from error
        raise pillow_error(path, error) from error


def _pixels(image: Image.Image, min_side: int | None) -> Photo:
    width, height = image.size
    if min_side is not None and image.format in _DRAFT_FORMATS:
        # draft() picks the smallest scale at least this size; the aspect is kept.
        factor = max(min_side / max(width, height), 1.0 / 8.0)
        if factor < 1.0:
            image.draft("RGB", (int(width * factor + 0.999), int(height * factor + 0.999)))
    image.load()
    turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # these swap width and height
    full_w, full_h = (height, width) if turned else (width, height)
    upright = ImageOps.exif_transpose(image)
    if upright.mode in _WIDE_GRAY_MODES:
        return Photo(_wide_gray_to_rgb(upright), full_w, full_h)
    return Photo(np.asarray(upright.convert("RGB"), dtype=np.uint8), full_w, full_h)


def _read_failure(error: Exception) -> bool:
    """The disk or share failed mid-read: not the file's fault (read_error, transient)."""
    return isinstance(error, OSError) and error.errno is not None


def _maybe_raw(path: Path, sniffed: Sniffed) -> bool:
    """LibRaw tries a file Pillow cannot open when its bytes or its extension say RAW: LibRaw
    knows more formats than `sniff` does, and the extension only lets it look."""
    return sniffed.kind == "raw" or path.suffix.lower() in RAW_EXTENSIONS


def _raw_refusal(path: Path, refusal: raw.NotRaw, photo: bool) -> MediaDecodeError:
    """`photo`: the bytes said RAW (else only the extension did, and FFmpeg may still know it)."""
    return MediaDecodeError(f"{path}: not a RAW image LibRaw can decode ({refusal})", photo=photo)


def _refusal(path: Path, sniffed: Sniffed, error: Exception) -> MediaDecodeError:
    """Why a file Pillow cannot open is no photo: a HEIF or AVIF (by its bytes, or by its
    extension when the bytes say nothing) in its decoder's words, else Pillow's."""
    suffix = path.suffix.lower()
    unknown = sniffed.kind in (None, "bmff")
    if sniffed.kind == "heif" or (unknown and suffix in HEIF_EXTENSIONS):
        return _decoder_refusal(path, "HEIF", heif.heif_refusal(path), photo=not unknown)
    if sniffed.kind == "avif" or (unknown and suffix in AVIF_EXTENSIONS):
        return _decoder_refusal(path, "AVIF", heif.avif_refusal(path), photo=not unknown)
    return pillow_error(path, error)


def _decoder_refusal(path: Path, kind: str, reason: str, photo: bool = True) -> MediaDecodeError:
    decoder = "a HEIF image libheif" if kind == "HEIF" else "an AVIF image libavif"
    return MediaDecodeError(f"{path}: not {decoder} can decode ({reason})", photo=photo)


# 16-bit and float grayscale: Pillow's convert("RGB") clips them instead of scaling.
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def _wide_gray_to_rgb(image: Image.Image) -> RGBImage:
    values = np.asarray(image, dtype=np.float32)
    top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0.0) > 255 else 255.0
    gray = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)
