"""A person's montage: a contact sheet of their faces across photos and videos, video faces
with their time, one face per video track (an appearance, not each of its frames)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from face_assets.core.files import partial_file
from face_assets.core.storage.corrections import FaceRow

TILE_PX = 96
COLUMNS = 10
# A sheet stays a picture one can look at: the first appearances, in the order of the files.
MAX_TILES = 200


def clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{rest:02d}" if hours else f"{minutes}:{rest:02d}"


def montage_faces(faces: Sequence[FaceRow]) -> list[tuple[FaceRow, str]]:
    """The faces a montage shows, with their captions: every photo face, and the middle face of
    each video track; in the order of the files, then of the time."""
    tracks: dict[int, list[FaceRow]] = {}
    shown: list[FaceRow] = []
    for face in faces:
        if face.thumbnail is None:
            continue
        if face.track_id is not None:
            tracks.setdefault(face.track_id, []).append(face)
        else:
            shown.append(face)
    for members in tracks.values():
        members.sort(key=lambda f: f.time_s or 0.0)
        shown.append(members[len(members) // 2])
    shown.sort(key=lambda f: (str(f.path), f.time_s or 0.0, f.id))
    return [(f, clock(f.time_s) if f.time_s is not None else "") for f in shown[:MAX_TILES]]


def montage_digest(tiles: Sequence[tuple[FaceRow, str]]) -> str:
    """What the montage is made of: it is drawn again only when this changes."""
    text = "\n".join(f"{face.thumbnail}|{caption}" for face, caption in tiles)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def write_montage(tiles: Sequence[tuple[FaceRow, str]], thumbnail_dir: Path, target: Path) -> None:
    """The contact sheet as a JPEG, written beside the target and renamed (never half a file).
    A thumbnail file that is missing leaves its tile grey."""
    columns = min(COLUMNS, max(len(tiles), 1))
    rows = max((len(tiles) + columns - 1) // columns, 1)
    sheet = Image.new("RGB", (columns * TILE_PX, rows * TILE_PX), (64, 64, 64))
    draw = ImageDraw.Draw(sheet)
    for index, (face, caption) in enumerate(tiles):
        x, y = (index % columns) * TILE_PX, (index // columns) * TILE_PX
        try:
            with Image.open(thumbnail_dir / str(face.thumbnail)) as thumbnail:
                sheet.paste(thumbnail.convert("RGB").resize((TILE_PX, TILE_PX)), (x, y))
        except OSError:
            pass
        if caption:
            draw.rectangle((x, y + TILE_PX - 14, x + TILE_PX - 1, y + TILE_PX - 1), fill=(0, 0, 0))
            draw.text((x + 3, y + TILE_PX - 13), caption, fill=(255, 255, 255))
    with partial_file(target) as partial:
        sheet.save(partial, format="JPEG", quality=85)
        partial.replace(target)
