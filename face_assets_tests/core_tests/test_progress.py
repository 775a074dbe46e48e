"""Long steps say how far they are: items done of the total, the rate and the time left."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from face_assets.core import progress
from face_assets.core.face import detect_faces
from face_assets.core.media_item import register_folder
from face_assets.core.storage.store import FaceStore
from face_assets_tests.core_tests.test_face_step import StubDetector


def test_a_line_gives_done_of_total_the_rate_and_the_time_left() -> None:
    assert progress.describe("detect", 500, 50_000, "media items", 40.0) == (
        "detect: 500/50000 media items, 12.5/s, about 1 h 06 min left"
    )
    embed = progress.describe("embed", 30, 90, "faces", 10.0)
    assert embed == "embed: 30/90 faces, 3.0/s, about 0 min 20 s left"
    assert progress.describe("register", 1200, None, "files", 3.0) == "register: 1200 files, 400.0/s"
    assert progress.describe("detect", 9, 9, "media items", 3.0) == "detect: 9/9 media items, 3.0/s"


def test_registration_and_detection_report_their_progress(tmp_path: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    for n in range(6):
        Image.fromarray(np.full((16, 16, 3), 40 * n, dtype=np.uint8)).save(library / f"{n}.png")
    store = FaceStore.from_url(f"sqlite:///{tmp_path / 'faces.db'}", upgrade=True)
    lines: list[str] = []

    with progress.reporting(progress.Lines(lines.append, every_s=0.0)):
        register_folder(store, library)
        detect_faces(store, StubDetector())

    registered = [x.split(",")[0] for x in lines if x.startswith("register")]
    assert registered == [f"register: {n} files" for n in range(1, 7)]
    detected = [x.split(",")[0] for x in lines if x.startswith("detect")]
    assert detected == [f"detect: {n}/6 media items" for n in range(1, 7)]


def test_without_a_reporter_nothing_is_printed(tmp_path: Path, capsys) -> None:
    store = FaceStore.from_url(f"sqlite:///{tmp_path / 'faces.db'}", upgrade=True)
    detect_faces(store, StubDetector())
    assert capsys.readouterr() == ("", "")
