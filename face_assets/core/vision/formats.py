"""What a photo file is, from its first bytes, and the errors that name a file that cannot be read.

No decoder is imported here: sniffing reads a few hundred bytes, so that a JPEG or PNG never pays
for LibRaw or libheif, and a video is never handed to LibRaw (which also knows some headerless
formats by file size alone, and could take an unlucky video for one).
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from face_assets.core.errors import UserError

# Formats Pillow (with pillow-heif's opener) decodes that count as photos; the bytes decide, the
# extension is ignored. RAW formats are named by `sniff` (DNG, NEF, CR3, ...; "RAW" when unknown).
IMAGE_FORMATS = frozenset(
    {"JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "MPO", "PPM", "ICO", "JPEG2000", "HEIF", "AVIF"}
)

# Extensions under which people keep camera RAW files. Only used to choose which reason a file
# that no decoder reads is given, and to let LibRaw try a file whose bytes `sniff` does not know.
RAW_EXTENSIONS = frozenset(
    ".dng .cr2 .cr3 .crw .nef .nrw .arw .srf .sr2 .orf .rw2 .rwl .raf .pef .srw .x3f .3fr .fff"
    " .iiq .mos .mef .mrw .kdc .dcr .erf .raw .gpr".split()
)
HEIF_EXTENSIONS = frozenset(".heic .heif .hif .heics .heifs".split())
AVIF_EXTENSIONS = frozenset({".avif", ".avifs"})

# ISO-BMFF brands (ftyp) of HEVC-coded HEIF and of AVIF; mif1/msf1 alone say only "HEIF".
_HEVC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1"})

# RAW formats with a header of their own (the rest are TIFF files, told apart below).
_RAW_MAGIC = (
    (0, b"IIRO", "ORF"),
    (0, b"IIRS", "ORF"),
    (0, b"MMOR", "ORF"),
    (0, b"IIU\0", "RW2"),
    (0, b"FUJIFILMCCD-RAW", "RAF"),
    (0, b"\0MRM", "MRW"),
    (0, b"FOVb", "X3F"),
    (6, b"HEAPCCDR", "CRW"),
)
# A camera's TIFF-based RAW named by the maker in its Make tag.
_RAW_BY_MAKE = (
    ("NIKON", "NEF"),
    ("SONY", "ARW"),
    ("PENTAX", "PEF"),
    ("RICOH", "PEF"),
    ("SAMSUNG", "SRW"),
    ("OLYMPUS", "ORF"),
    ("HASSELBLAD", "3FR"),
    ("PHASE ONE", "IIQ"),
    ("LEAF", "MOS"),
    ("MAMIYA", "MEF"),
    ("KODAK", "DCR"),
    ("EPSON", "ERF"),
)

_DNG_VERSION, _MAKE, _SUBIFDS, _PHOTOMETRIC, _NEW_SUBFILE_TYPE = 50706, 271, 330, 262, 254
_CFA, _LINEAR_RAW = 32803, 34892


class MediaDecodeError(UserError, ValueError):
    """A media item cannot be read as an image; the message names the file.

    `transient`: the file could not be read now (missing, permission, I/O error): it is
    retried on the next run. Otherwise its bytes are bad, and that is final.
    `photo`: the bytes are a photo format's (HEIF, AVIF, a RAW) that its decoder refused: no video
    decoder is asked (FFmpeg takes a HEIC for a one-frame video).
    """

    def __init__(self, message: str, *, transient: bool = False, photo: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.photo = photo


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


def pillow_error(path: Path, error: Exception) -> MediaDecodeError:
    """Pillow's failure on a file, as the error naming it."""
    if isinstance(error, Image.DecompressionBombError):
        # Pillow's guard against a small file that decodes to gigabytes (a "decompression bomb").
        return MediaDecodeError(f"{path}: too many pixels to decode safely ({error})")
    if isinstance(error, UnidentifiedImageError):
        empty = path.is_file() and path.stat().st_size == 0
        return MediaDecodeError(f"{path}: {'empty file' if empty else 'not an image Pillow can decode'}")
    if isinstance(error, OSError) and error.errno is not None:
        return read_error(path, error)  # the disk or share failed mid-read, not the file
    return MediaDecodeError(f"{path}: cannot decode image ({error})")


def too_many_pixels(path: Path, width: int, height: int) -> MediaDecodeError | None:
    """Pillow's decompression-bomb limit, for the decoders that are not Pillow."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > 2 * limit:
        return MediaDecodeError(f"{path}: too many pixels to decode safely ({width}x{height})")
    return None


@dataclass(frozen=True)
class Sniffed:
    """What the first bytes say: `kind` "raw", "heif", "avif", "bmff" (another ISO-BMFF file: a
    video, most likely) or None (let Pillow tell); for a
    RAW, the format's short name, and `certain` when the bytes leave no doubt (a DNG, a format
    with its own header) rather than a TIFF with a camera's marks, which may be a plain TIFF."""

    kind: str | None = None
    name: str | None = None
    certain: bool = True


def sniff(handle: BinaryIO) -> Sniffed:
    """The kind of photo file from its header; the handle is left at the start."""
    try:
        head = handle.read(64)
        if head[4:8] == b"ftyp":
            return _sniff_bmff(head)
        if head[:4] in (b"II*\0", b"MM\0*"):
            return _sniff_tiff(handle, head)
        for offset, magic, name in _RAW_MAGIC:
            if head[offset : offset + len(magic)] == magic:
                return Sniffed("raw", name)
        return Sniffed()
    finally:
        handle.seek(0)


def _sniff_bmff(head: bytes) -> Sniffed:
    size = struct.unpack(">I", head[:4])[0]
    box = head[8 : min(max(size, 16), len(head))]
    brands = {box[i : i + 4] for i in range(0, len(box) - 3, 4) if i != 4}  # skip minor_version
    if head[8:12] == b"crx ":
        return Sniffed("raw", "CR3")
    if brands & _AVIF_BRANDS:
        return Sniffed("avif")
    if brands & (_HEVC_BRANDS | _HEIF_BRANDS):
        return Sniffed("heif")
    return Sniffed("bmff")  # MP4, MOV, 3GP... or a HEIF of a brand not listed: libheif may know


def _sniff_tiff(handle: BinaryIO, head: bytes) -> Sniffed:
    """A TIFF is a camera RAW when IFD 0 carries DNGVersion, or (Canon's CR2 mark or) a Make with
    the image elsewhere (sub-IFDs) or stored as a mosaic (CFA). A scan or an editor's 16-bit TIFF
    has neither, and LibRaw would take a 16-bit grey one for a Bayer mosaic. It is `certain` unless
    IFD 0 is a full-resolution picture Pillow could show (then a TIFF LibRaw refuses is Pillow's)."""
    if head[8:10] == b"CR":
        return Sniffed("raw", "CR2")
    tags = _ifd0(handle, "<" if head[:2] == b"II" else ">")
    if _DNG_VERSION in tags:
        return Sniffed("raw", "DNG")
    make = tags.get(_MAKE)
    if not isinstance(make, str) or not make:
        return Sniffed()
    mosaic = tags.get(_PHOTOMETRIC) in (_CFA, _LINEAR_RAW)
    if _SUBIFDS in tags or mosaic:
        name = next((n for m, n in _RAW_BY_MAKE if make.upper().startswith(m)), "RAW")
        preview_first = int(tags.get(_NEW_SUBFILE_TYPE, 0)) & 1
        return Sniffed("raw", name, certain=bool(mosaic or preview_first))
    return Sniffed()


def _ifd0(handle: BinaryIO, order: str) -> dict[int, int | str]:
    """NewSubfileType, DNGVersion, Make, SubIFDs and PhotometricInterpretation of the first IFD
    (the others are not read)."""
    handle.seek(4)
    (offset,) = struct.unpack(order + "I", handle.read(4))
    handle.seek(offset)
    raw_count = handle.read(2)
    if len(raw_count) < 2:
        return {}
    (count,) = struct.unpack(order + "H", raw_count)
    table = handle.read(12 * min(count, 512))
    tags: dict[int, int | str] = {}
    for start in range(0, len(table) - 11, 12):
        tag, kind, number = struct.unpack(order + "HHI", table[start : start + 8])
        value = table[start + 8 : start + 12]
        if tag == _PHOTOMETRIC and kind == 3:
            tags[tag] = struct.unpack(order + "H", value[:2])[0]
        elif tag == _NEW_SUBFILE_TYPE and kind == 4:
            tags[tag] = struct.unpack(order + "I", value)[0]
        elif tag == _MAKE and kind == 2:
            if number > 4:
                handle.seek(struct.unpack(order + "I", value)[0])
                value = handle.read(min(number, 64))
            tags[tag] = value[:number].split(b"\0")[0].decode("latin-1").strip()
        elif tag in (_DNG_VERSION, _SUBIFDS):
            tags[tag] = number
    return tags
