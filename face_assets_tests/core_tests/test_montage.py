"""A person's montage: their faces across photos and videos, one tile per video track, video
faces with their time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from face_assets.core.montage import TILE_PX, clock, montage_faces, write_montage
from face_assets.core.storage.corrections import FaceRow


def face(
    face_id: int, path: str, thumbnail: str | None, time_s: float | None = None, track: int | None = None
):
    return FaceRow(face_id, 1, face_id, Path(path), [0, 0, 10, 10], thumbnail, None, time_s, track)


def test_a_track_is_one_tile_with_its_time_and_photos_each_their_own() -> None:
    faces = [
        face(1, "b.jpg", "t/1.jpg"),
        face(2, "a.mp4", "t/2.jpg", 0.0, track=2),
        face(3, "a.mp4", "t/3.jpg", 1.0, track=2),
        face(4, "a.mp4", "t/4.jpg", 2.0, track=2),
        face(5, "a.mp4", "t/5.jpg", 75.0, track=5),
        face(6, "c.jpg", None),  # no thumbnail yet: not shown
    ]

    tiles = montage_faces(faces)

    assert [(f.id, caption) for f, caption in tiles] == [(3, "0:01"), (5, "1:15"), (1, "")]
    assert clock(3725.0) == "1:02:05"


def test_the_sheet_has_a_tile_per_face_and_each_tile_is_its_thumbnail(tmp_path: Path) -> None:
    colours = {"t/1.jpg": (200, 30, 30), "t/2.jpg": (30, 200, 30), "t/3.jpg": (30, 30, 200)}
    for name, colour in colours.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (112, 112), colour).save(tmp_path / name)
    tiles = montage_faces([face(i, f"{i}.jpg", f"t/{i}.jpg") for i in (1, 2, 3)])

    write_montage(tiles, tmp_path, tmp_path / "out" / "montage.jpg")

    with Image.open(tmp_path / "out" / "montage.jpg") as sheet:
        assert sheet.size == (3 * TILE_PX, TILE_PX)
        pixels = np.asarray(sheet.convert("RGB")).astype(int)
    for index, colour in enumerate(colours.values()):
        centre = pixels[TILE_PX // 2, index * TILE_PX + TILE_PX // 2]
        assert np.abs(centre - colour).max() < 20
