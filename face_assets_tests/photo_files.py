"""Photo files in the shapes phones and cameras write, made at test time from a real photo.

- HEIC as iPhones store it: a grid of 512-px HEVC tiles, the pixels as the sensor saw them with an
  `irot`/`imir` property to stand them up, and EXIF Orientation kept beside (pillow-heif/libheif).
- AVIF with its `irot`/`imir` property (Pillow's libavif encoder).
- DNG: the Bayer mosaic of the photo (what demosaicing should give back) in a sub-IFD, with a
  full-size or half-size JPEG preview, a small bitmap thumbnail only, or no preview at all (raw
  in IFD 0, as Android's DngCreator writes it without a thumbnail).
- NEF as a Nikon D810 writes an uncompressed one: a 160x120 thumbnail in IFD 0, then a full-size
  JPEG preview and the 14-bit mosaic in sub-IFDs. No DNG tags: LibRaw knows it by its Make and Model.

The TIFF writer is here rather than a dependency: DNG and NEF need sub-IFDs holding a JPEG
stream as is, and a writer for those is under 100 lines.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from face_assets.core.vision.raw import UPRIGHT_TRANSPOSE

# XYZ (D65) -> linear sRGB: as a DNG ColorMatrix1 it makes the camera's RGB linear sRGB itself.
XYZ_TO_SRGB = np.array(
    [
        [3.2404542, -1.5371385, -0.4985314],
        [-0.9692660, 1.8760108, 0.0415560],
        [0.0556434, -0.2040259, 1.0572252],
    ]
)


# linear sRGB -> XYZ (D65), the constant LibRaw uses for its camera matrices.
SRGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)


def real_photo(source: Path, long_side: int) -> NDArray[np.uint8]:
    """A real photo enlarged to `long_side` (even sides, as a Bayer mosaic needs), RGB."""
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    scale = long_side / max(image.size)
    size = (2 * round(image.width * scale / 2), 2 * round(image.height * scale / 2))
    return np.asarray(image.resize(size, Image.Resampling.BICUBIC))


def stored(upright: NDArray[np.uint8], orientation: int) -> Image.Image:
    """The pixels a camera stores for an upright picture taken with this EXIF orientation."""
    image = Image.fromarray(upright)
    inverse = {6: 8, 8: 6}.get(orientation, orientation)  # the others undo themselves
    return image.transpose(UPRIGHT_TRANSPOSE[inverse]) if orientation != 1 else image


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def write_jpeg(path: Path, upright: NDArray[np.uint8], orientation: int = 1, quality: int = 95) -> Path:
    stored(upright, orientation).save(path, "JPEG", quality=quality, exif=_exif(orientation))
    return path


def write_heic(
    path: Path, upright: NDArray[np.uint8], orientation: int = 1, tile: int | None = 512, quality: int = 90
) -> Path:
    """A HEIC as an iPhone writes it: tiles of `tile` px (None: one image), the turn in `irot`
    (and `imir`) and the same orientation in EXIF, which readers must not apply again."""
    import pillow_heif

    image = stored(upright, orientation)
    heif = pillow_heif.from_pillow(image)
    # pillow-heif turns EXIF Orientation into irot/imir and keeps the EXIF tag as it is.
    # x265's fastest preset: 5x quicker than its default here, the same file structure.
    heif.save(
        path,
        quality=quality,
        exif=_exif(orientation),
        tile_size=tile or 0,
        format="HEIF",
        enc_params={"preset": "ultrafast"},
    )
    return path


def write_avif(path: Path, upright: NDArray[np.uint8], orientation: int = 1, quality: int = 90) -> Path:
    """An AVIF whose turn is in `irot`/`imir` (Pillow moves EXIF Orientation there when saving)."""
    stored(upright, orientation).save(path, "AVIF", quality=quality, exif=_exif(orientation))
    return path


# --- TIFF, DNG, NEF ---------------------------------------------------------------------------

BYTE, ASCII, SHORT, LONG, RATIONAL, UNDEFINED, SRATIONAL = 1, 2, 3, 4, 5, 7, 10
_PACK = {BYTE: "B", SHORT: "H", LONG: "I", UNDEFINED: "B"}


@dataclass
class Ifd:
    """One TIFF image file directory: tags (type, values), the image data it points at, sub-IFDs."""

    tags: dict[int, tuple[int, Sequence[object] | str]]
    data: bytes = b""
    subifds: list[Ifd] = field(default_factory=list)
    exif: Ifd | None = None
    # Where the data is pointed at: StripOffsets/StripByteCounts, or (513, 514) for the
    # JPEGInterchangeFormat pair Nikon uses for its preview.
    data_tags: tuple[int, int] = (273, 279)


def _encode(kind: int, values: Sequence[object] | str) -> tuple[bytes, int]:
    if kind == ASCII:
        text = str(values).encode() + b"\0"
        return text, len(text)
    if kind in (RATIONAL, SRATIONAL):
        code = "i" if kind == SRATIONAL else "I"
        pairs = [(round(float(v) * 10000), 10000) for v in values]  # type: ignore[arg-type]
        return b"".join(struct.pack(f"<{code}{code}", n, d) for n, d in pairs), len(pairs)
    return struct.pack(f"<{len(values)}{_PACK[kind]}", *values), len(values)


def _with_pointers(ifd: Ifd, at: dict[int, int]) -> dict[int, tuple[int, Sequence[object] | str]]:
    """The IFD's tags plus those pointing at its sub-IFDs, EXIF IFD and data (0 until placed)."""
    tags = dict(ifd.tags)
    if ifd.subifds:
        tags[330] = (LONG, [at.get(id(sub), 0) for sub in ifd.subifds])
    if ifd.exif is not None:
        tags[34665] = (LONG, [at.get(id(ifd.exif), 0)])
    if ifd.data:
        tags[ifd.data_tags[0]] = (LONG, [at.get(id(ifd.data), 0)])
        tags[ifd.data_tags[1]] = (LONG, [len(ifd.data)])
    return tags


def _table(tags: dict[int, tuple[int, Sequence[object] | str]], start: int) -> bytes:
    """One IFD at `start`: its entries, the next-IFD link (none), then the values too long to
    stand in an entry."""
    entries = sorted(tags.items())
    extra_at = start + 2 + 12 * len(entries) + 4
    table, extra = bytearray(struct.pack("<H", len(entries))), bytearray()
    for tag, (kind, values) in entries:
        raw, count = _encode(kind, values)
        if len(raw) <= 4:
            inline = raw.ljust(4, b"\0")
        else:
            inline = struct.pack("<I", extra_at + len(extra))
            extra += raw + b"\0" * (len(raw) % 2)
        table += struct.pack("<HHI", tag, kind, count) + inline
    return bytes(table + struct.pack("<I", 0) + extra)


def write_tiff(path: Path, first: Ifd, header: bytes = b"II*\0") -> Path:
    """A little-endian TIFF laid out as cameras do: every IFD first (IFD 0 at offset 8), then the
    image data, so that a file cut short keeps its directories and loses pixels."""
    ifds: list[Ifd] = []

    def walk(ifd: Ifd) -> None:
        ifds.append(ifd)
        for child in [*ifd.subifds, *([ifd.exif] if ifd.exif is not None else [])]:
            walk(child)

    walk(first)
    at: dict[int, int] = {}
    position = 8
    for ifd in ifds:  # the tables' sizes do not depend on the offsets in them
        at[id(ifd)] = position
        position += len(_table(_with_pointers(ifd, at), position))
        position += position % 2
    for ifd in ifds:
        if ifd.data:
            at[id(ifd.data)] = position
            position += len(ifd.data) + len(ifd.data) % 2
    out = bytearray(header + struct.pack("<I", 8))
    for ifd in ifds:
        out += _table(_with_pointers(ifd, at), at[id(ifd)])
        out += b"\0" * (len(out) % 2)
    for ifd in ifds:
        if ifd.data:
            out += ifd.data + b"\0" * (len(ifd.data) % 2)
    path.write_bytes(bytes(out))
    return path


def _linear(srgb: NDArray[np.uint8]) -> NDArray[np.float64]:
    """sRGB values to linear light, 0-1 (IEC 61966-2-1)."""
    v = srgb.astype(np.float64) / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def bayer_mosaic(
    sensor_rgb: NDArray[np.uint8], white: int, camera_from_srgb: NDArray[np.float64] | None = None
) -> NDArray[np.uint16]:
    """The RGGB mosaic a sensor records for this picture (linear, 0..white), one value a pixel.

    `camera_from_srgb` maps linear sRGB to the camera's own RGB (identity: a DNG whose colour
    matrix says the camera sees sRGB)."""
    light = _linear(sensor_rgb)
    if camera_from_srgb is not None:
        light = np.clip(light @ camera_from_srgb.T, 0.0, 1.0)
    mosaic = np.empty(light.shape[:2])
    mosaic[0::2, 0::2] = light[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = light[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = light[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = light[1::2, 1::2, 2]
    return np.round(mosaic * white).astype(np.uint16)


def _jpeg_bytes(image: Image.Image, quality: int = 92, exif: int | None = None) -> bytes:
    """A preview JPEG; `exif`: with an EXIF block of its own right after the start marker, as a
    camera's JPEG (LibRaw keeps such a block, and puts its own before any other JPEG)."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    data = buffer.getvalue()
    if exif is None:
        return data
    app1 = _exif(exif)  # "Exif\0\0", then a TIFF header holding the tag
    jfif_end = 4 + struct.unpack(">H", data[4:6])[0]  # SOI, then Pillow's JFIF APP0
    return b"\xff\xd8\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[jfif_end:]


def bitmap_ifd(image: Image.Image, subfile: int = 1) -> Ifd:
    width, height = image.size
    return Ifd(
        {
            254: (LONG, [subfile]),
            256: (LONG, [width]),
            257: (LONG, [height]),
            258: (SHORT, [8, 8, 8]),
            259: (SHORT, [1]),
            262: (SHORT, [2]),
            277: (SHORT, [3]),
            278: (LONG, [height]),
            284: (SHORT, [1]),
        },
        data=image.convert("RGB").tobytes(),
    )


def _cfa_ifd(mosaic: NDArray[np.uint16], bits: int) -> Ifd:
    height, width = mosaic.shape
    return Ifd(
        {
            254: (LONG, [0]),
            256: (LONG, [width]),
            257: (LONG, [height]),
            258: (SHORT, [bits]),
            259: (SHORT, [1]),
            262: (SHORT, [32803]),  # CFA
            277: (SHORT, [1]),
            278: (LONG, [height]),
            284: (SHORT, [1]),
            33421: (SHORT, [2, 2]),  # CFARepeatPatternDim
            33422: (BYTE, [0, 1, 1, 2]),  # CFAPattern: R G / G B
        },
        data=mosaic.astype("<u2").tobytes(),
    )


def write_dng(
    path: Path,
    upright: NDArray[np.uint8],
    orientation: int = 1,
    preview: str | None = "full",
    preview_exif: int | None = None,
) -> Path:
    """A DNG of the picture: preview "full" (a full-size JPEG in IFD 0, the mosaic in a sub-IFD),
    "half" (a JPEG of half the size),
    "thumbnail" (a 256-px bitmap in IFD 0 only) or None (the mosaic in IFD 0, as Android's
    DngCreator). `preview_exif`: the preview JPEG carries an EXIF block of its own with this
    Orientation (LibRaw wraps one without it in an EXIF block with the raw's orientation)."""
    sensor = stored(upright, orientation)
    white = 16383  # 14 bits, as most sensors
    raw = _cfa_ifd(bayer_mosaic(np.asarray(sensor), white), 16)
    dng_tags: dict[int, tuple[int, Sequence[object] | str]] = {
        271: (ASCII, "face_assets"),
        272: (ASCII, "test sensor"),
        274: (SHORT, [orientation]),
        50706: (BYTE, [1, 4, 0, 0]),  # DNGVersion
        50707: (BYTE, [1, 1, 0, 0]),  # DNGBackwardVersion
        50708: (ASCII, "face_assets test sensor"),  # UniqueCameraModel
        50721: (SRATIONAL, XYZ_TO_SRGB.ravel().tolist()),  # ColorMatrix1: the camera sees sRGB
        50778: (SHORT, [21]),  # CalibrationIlluminant1: D65
        50728: (RATIONAL, [1.0, 1.0, 1.0]),  # AsShotNeutral: white is white
    }
    raw.tags[50717] = (LONG, [white])  # WhiteLevel
    if preview is None:
        raw.tags.update(dng_tags)
        return write_tiff(path, raw)
    if preview in ("full", "half"):
        jpeg = sensor if preview == "full" else sensor.resize((sensor.width // 2, sensor.height // 2))
        width, height = jpeg.size
        first = Ifd(
            {
                254: (LONG, [1]),
                256: (LONG, [width]),
                257: (LONG, [height]),
                258: (SHORT, [8, 8, 8]),
                259: (SHORT, [7]),  # JPEG
                262: (SHORT, [6]),  # YCbCr
                277: (SHORT, [3]),
                278: (LONG, [height]),
                284: (SHORT, [1]),
                50970: (LONG, [2]),  # PreviewColorSpace: sRGB
            },
            data=_jpeg_bytes(jpeg, exif=preview_exif),
        )
    else:
        small = sensor.copy()
        small.thumbnail((256, 256))
        first = bitmap_ifd(small)
    first.tags.update(dng_tags)
    first.subifds = [raw]
    return write_tiff(path, first)


def write_nef(path: Path, upright: NDArray[np.uint8], orientation: int = 1, preview: bool = True) -> Path:
    """An uncompressed 14-bit NEF as a Nikon D810 writes it: IFD 0 a 160x120 thumbnail with the
    camera's Make, Model and Orientation; sub-IFDs the full-size JPEG preview (`preview`) and the
    mosaic. The mosaic is in the D810's own colours: LibRaw's matrix for that camera is read
    back from a first pass, so that demosaicing gives the picture back."""
    import rawpy

    sensor = stored(upright, orientation)
    white = 16383
    thumb = sensor.copy()
    thumb.thumbnail((160, 120))
    first = bitmap_ifd(thumb)
    first.tags.update(
        {
            271: (ASCII, "NIKON CORPORATION"),
            272: (ASCII, "NIKON D810"),
            274: (SHORT, [orientation]),
            305: (ASCII, "Ver.1.10"),
        }
    )
    first.exif = Ifd({37500: (UNDEFINED, list(_nikon_maker_note(NEF_BALANCE)))})  # MakerNote

    def layout(mosaic: NDArray[np.uint16]) -> Ifd:
        subifds = [_cfa_ifd(mosaic, 14)]
        if preview:
            jpeg = Ifd({254: (LONG, [1]), 259: (SHORT, [6])}, data=_jpeg_bytes(sensor), data_tags=(513, 514))
            subifds.insert(0, jpeg)
        first.subifds = subifds
        return first

    # First pass: a grey mosaic, to read the D810's colour matrix from LibRaw's own table.
    write_tiff(path, layout(np.full((sensor.height, sensor.width), white // 4, np.uint16)))
    with rawpy.imread(str(path)) as raw:
        camera_from_xyz = np.asarray(raw.rgb_xyz_matrix)[:3]
        black = int(np.asarray(raw.black_level_per_channel).max())
        white = raw.white_level
    # As LibRaw's cam_xyz_coeff: camera RGB from linear sRGB, each row scaled to sum to 1 (white
    # stays white); demosaicing multiplies by the as-shot balance over its smallest value.
    camera_from_srgb = camera_from_xyz @ SRGB_TO_XYZ
    camera_from_srgb /= camera_from_srgb.sum(axis=1, keepdims=True)
    camera_from_srgb /= (NEF_BALANCE / NEF_BALANCE.min())[:, None]
    mosaic = bayer_mosaic(np.asarray(sensor), white - black, camera_from_srgb)
    return write_tiff(path, layout(mosaic + np.uint16(black)))


# The as-shot white balance (R, G, B multipliers) written in the NEF's maker note, daylight-like.
NEF_BALANCE = np.array([2.0, 1.0, 1.4])


def _nikon_maker_note(balance: NDArray[np.float64]) -> bytes:
    """Nikon's type-3 maker note holding only WB_RBLevels (tag 0x000c: R, B, G, G multipliers):
    its own TIFF header, offsets counted from there."""
    levels = [balance[0], balance[2], balance[1], balance[1]]
    values = b"".join(struct.pack("<II", round(v * 10000), 10000) for v in levels)
    ifd = (
        struct.pack("<H", 1)
        + struct.pack("<HHII", 0x000C, RATIONAL, 4, 8 + 2 + 12 + 4)
        + struct.pack("<I", 0)
    )
    return b"Nikon\0\x02\x10\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd + values


# --- ISO-BMFF (HEIF, AVIF): what the file holds, read independently of libheif -------------------


def heif_items(path: Path) -> tuple[list[str], list[str]]:
    """The item types (hvc1, grid, Exif, ...) and the item property types (ispe, irot, imir,
    hvcC, ...) of a HEIF/AVIF file's meta box."""
    data = path.read_bytes()
    meta = _child(data, 0, len(data), b"meta")
    assert meta is not None, f"{path} has no meta box"
    start, end = meta[0] + 4, meta[1]  # a full box: version and flags first
    items: list[str] = []
    iinf = _child(data, start, end, b"iinf")
    if iinf is not None:
        version = data[iinf[0]]
        first = iinf[0] + 4 + (2 if version == 0 else 4)
        for box_start, _, kind in _boxes(data, first, iinf[1]):
            if kind == b"infe" and data[box_start] >= 2:
                at = box_start + 4 + (2 if data[box_start] == 2 else 4) + 2
                items.append(data[at : at + 4].decode("latin-1"))
    properties: list[str] = []
    iprp = _child(data, start, end, b"iprp")
    if iprp is not None:
        ipco = _child(data, iprp[0], iprp[1], b"ipco")
        if ipco is not None:
            properties = [kind.decode("latin-1") for _, _, kind in _boxes(data, ipco[0], ipco[1])]
    return items, properties


def _boxes(data: bytes, start: int, end: int) -> list[tuple[int, int, bytes]]:
    """(payload start, payload end, type) of the boxes between start and end."""
    found, at = [], start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[at + 8 : at + 16])[0], 16
        elif size == 0:
            size = end - at
        found.append((at + header, at + size, kind))
        at += size
    return found


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    return next(((s, e) for s, e, k in _boxes(data, start, end) if k == kind), None)
