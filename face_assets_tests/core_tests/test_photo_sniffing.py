"""Which decoder a file goes to, from its first bytes: the headers of the formats the tests cannot
write whole (CR3, ORF, RW2, RAF, ...) and the TIFFs that are, or are not, camera RAWs."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face_assets.core.vision.formats import Sniffed, sniff
from face_assets.core.vision.photo import decode_photo, identify_photo
from face_assets_tests.photo_files import ASCII, BYTE, SHORT, bitmap_ifd, write_tiff


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\0\0\0\0" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\0" * 32


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0" + b"\0" * 60, Sniffed()),  # JPEG: Pillow's
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 56, Sniffed()),
        (_ftyp(b"heic", b"mif1", b"heic"), Sniffed("heif")),
        (_ftyp(b"mif1", b"heic", b"miaf"), Sniffed("heif")),  # Samsung, some Android
        (_ftyp(b"avif", b"mif1", b"miaf"), Sniffed("avif")),
        (_ftyp(b"mif1", b"avif"), Sniffed("avif")),
        (_ftyp(b"crx ", b"crx ", b"isom"), Sniffed("raw", "CR3")),
        (_ftyp(b"isom", b"iso2", b"mp41"), Sniffed("bmff")),  # an MP4: FFmpeg's
        (_ftyp(b"qt  ", b"qt  "), Sniffed("bmff")),  # a MOV (a Live Photo's video)
        (b"IIRO\x08\0\0\0" + b"\0" * 56, Sniffed("raw", "ORF")),
        (b"IIU\0\x08\0\0\0" + b"\0" * 56, Sniffed("raw", "RW2")),
        (b"FUJIFILMCCD-RAW 0201" + b"\0" * 44, Sniffed("raw", "RAF")),
        (b"\0MRM" + b"\0" * 60, Sniffed("raw", "MRW")),
        (b"FOVb" + b"\0" * 60, Sniffed("raw", "X3F")),
        (b"II\x1a\0\0\0HEAPCCDR" + b"\0" * 50, Sniffed("raw", "CRW")),
        (b"II*\0\x10\0\0\0CR\x02\0" + b"\0" * 52, Sniffed("raw", "CR2")),
    ],
)
def test_a_header_names_its_decoder(head: bytes, expected: Sniffed) -> None:
    handle = io.BytesIO(head)
    assert sniff(handle) == expected
    assert handle.tell() == 0


def _picture() -> Image.Image:
    y, x = np.mgrid[0:96, 0:128]
    return Image.fromarray(np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.uint8))


@pytest.mark.parametrize(
    ("make", "subfile", "subifds", "extra", "expected"),
    [
        (None, 0, False, {}, Sniffed()),  # a plain TIFF
        ("EPSON", 0, False, {}, Sniffed()),  # a scanner's: a Make, the picture in IFD 0
        (None, 0, False, {50706: (BYTE, [1, 4, 0, 0])}, Sniffed("raw", "DNG")),
        ("NIKON CORPORATION", 1, True, {}, Sniffed("raw", "NEF")),  # IFD 0 a thumbnail
        ("SONY", 1, True, {}, Sniffed("raw", "ARW")),
        ("PENTAX", 0, False, {262: (SHORT, [32803])}, Sniffed("raw", "PEF")),  # the mosaic in IFD 0
        ("Hasselblad", 0, True, {}, Sniffed("raw", "3FR", certain=False)),  # IFD 0 full size
    ],
)
def test_a_tiff_is_a_raw_by_its_cameras_marks(
    tmp_path: Path,
    make: str | None,
    subfile: int,
    subifds: bool,
    extra: dict[int, tuple[int, list[int]]],
    expected: Sniffed,
) -> None:
    first = bitmap_ifd(_picture(), subfile)
    if make is not None:
        first.tags[271] = (ASCII, make)
    first.tags.update(extra)
    if subifds:
        first.subifds = [bitmap_ifd(_picture().resize((64, 48)), 1)]
    path = write_tiff(tmp_path / "file.tif", first)

    with path.open("rb") as handle:
        assert sniff(handle) == expected


def test_a_full_size_tiff_with_a_cameras_marks_that_libraw_refuses_is_pillows(tmp_path: Path) -> None:
    """Make and sub-IFDs, but IFD 0 is an 8-bit RGB picture (an editor's export): LibRaw says no,
    and Pillow reads it."""
    first = bitmap_ifd(_picture(), 0)
    first.tags[271] = (ASCII, "Canon")
    first.subifds = [bitmap_ifd(_picture().resize((64, 48)), 1)]
    path = write_tiff(tmp_path / "export.tif", first)

    assert identify_photo(path) == "TIFF"
    assert np.array_equal(decode_photo(path).pixels, np.asarray(_picture()))
