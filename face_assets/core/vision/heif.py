"""HEIC/HEIF through libheif (pillow-heif's Pillow opener), and the reason a HEIF or AVIF is refused.

AVIF is Pillow's own: its wheels carry libavif (pillow-heif 1.x dropped AVIF for that reason).
Orientation, checked against both: libheif applies `irot`/`imir` to the pixels and pillow-heif
then sets EXIF Orientation to 1 (the original value is kept in info["original_orientation"]), so
exif_transpose turns nothing twice; Pillow's AVIF plugin leaves the pixels as stored and turns
`irot`/`imir` into EXIF Orientation, which exif_transpose then applies once. An EXIF Orientation
without `irot` is ignored, as the HEIF standard (and Apple's reader) say.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import BinaryIO

_REGISTERED = False
_LOCK = threading.Lock()


def register_heif_opener() -> None:
    """Lets Pillow open HEIC/HEIF: done on the first ISO-BMFF file met, not when the package is
    imported (importing pillow-heif loads libheif and its codecs, ~40 ms), nor for a JPEG."""
    global _REGISTERED
    if _REGISTERED:
        return
    with _LOCK:
        if _REGISTERED:
            return
        try:
            import pillow_heif
        except ImportError:  # without it HEIC files are named as unreadable, with this reason
            pass
        else:
            pillow_heif.register_heif_opener()
        _REGISTERED = True


def heif_refusal(path: Path) -> str:
    """Why libheif does not decode this file, in its words."""
    try:
        import pillow_heif
    except ImportError:
        return "pillow-heif is not installed"
    try:
        heif = pillow_heif.open_heif(path, convert_hdr_to_8bit=True)
        heif[heif.primary_index].load()
    except Exception as error:  # noqa: BLE001 - any failure of libheif is its reason
        return str(error) or type(error).__name__
    return "Pillow cannot use what libheif decodes"


def avif_refusal(path: Path) -> str:
    """Why libavif (Pillow's AVIF plugin) does not decode this file."""
    from PIL import AvifImagePlugin

    if not AvifImagePlugin.SUPPORTED:
        return "this Pillow was built without AVIF support"
    try:
        with AvifImagePlugin.AvifImageFile(path) as image:
            image.load()
    except Exception as error:  # noqa: BLE001 - any failure of libavif is its reason
        return str(error) or type(error).__name__
    return "Pillow cannot use what libavif decodes"


def truncated(handle: BinaryIO) -> str | None:
    """Whether the file ends before its last top-level box does, and by how much. libheif decodes
    a grid whose tiles were cut off with those tiles left grey, without an error."""
    handle.seek(0, 2)
    size = handle.tell()
    position = 0
    try:
        while position + 8 <= size:
            handle.seek(position)
            header = handle.read(16)
            (length,) = struct.unpack(">I", header[:4])
            if length == 1 and len(header) >= 16:
                (length,) = struct.unpack(">Q", header[8:16])
            elif length == 0:  # the box runs to the end of the file
                return None
            if length < 8:
                return "a box with a size smaller than its header"
            position += length
        if position > size:
            return f"file truncated: {size} of {position} bytes"
        return None
    finally:
        handle.seek(0)
