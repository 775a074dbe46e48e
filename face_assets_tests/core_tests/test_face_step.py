"""Orchestration of the detection step, with a stub detector (the real one is tested end to end)."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face_assets.core.face import MAX_CONSECUTIVE_FAILURES, ThumbnailTarget, detect_faces
from face_assets.core.media_item import register_folder
from face_assets.core.storage.store import FaceStore
from face_assets.core.thumbnail import thumbnail_relpath
from face_assets.core.vision.types import DetectedFace, RGBImage
from face_assets_devtools.clips import Scene, make_clip
from face_assets_tests.conftest import url_of


class StubDetector:
    """Finds one face in every image, except images whose top-left pixel is pure red."""

    name = "stub"

    def load(self) -> None:
        pass

    def detect(self, image: RGBImage) -> list[DetectedFace]:
        if tuple(image[0, 0]) == (255, 0, 0):
            raise RuntimeError("the model broke on this input")
        return [DetectedFace((1.0, 1.0, 9.0, 9.0), 0.99, ((2.0, 2.0),) * 5)]


def _photos(folder: Path, colours: list[tuple[int, int, int]]) -> None:
    folder.mkdir()
    for index, colour in enumerate(colours):
        pixels = np.full((16, 16, 3), colour, dtype=np.uint8)
        pixels[15, 15] = index  # photos of their own: identical files would be one media item
        Image.fromarray(pixels).save(folder / f"{index:02d}.png")


@pytest.fixture
def store(db_url: str) -> FaceStore:
    return FaceStore.from_url(db_url, upgrade=True)


def test_a_detector_failure_leaves_that_item_pending_and_the_rest_processed(
    tmp_path: Path, store: FaceStore
) -> None:
    _photos(tmp_path / "photos", [(0, 0, 255), (255, 0, 0), (0, 255, 0)])
    register_folder(store, tmp_path / "photos")

    run = detect_faces(store, StubDetector())

    assert run.faces == 2 and run.errors == []
    assert len(run.retry_later) == 1 and "01.png" in run.retry_later[0]
    pending = store.pending_media_items()
    assert [item.path.name for item in pending] == ["01.png"]  # retried next run, not lost


def test_repeated_detector_failures_stop_the_run_without_marking_items(
    tmp_path: Path, store: FaceStore
) -> None:
    _photos(tmp_path / "photos", [(255, 0, 0)] * (MAX_CONSECUTIVE_FAILURES + 2))
    register_folder(store, tmp_path / "photos")

    with pytest.raises(RuntimeError, match="model broke"):
        detect_faces(store, StubDetector())

    assert len(store.pending_media_items()) == MAX_CONSECUTIVE_FAILURES + 2
    assert store.counts()["media_items_failed"] == 0


def test_thumbnails_are_cut_at_detection_and_saved_with_their_faces(tmp_path: Path, store: FaceStore) -> None:
    _photos(tmp_path / "photos", [(0, 0, 255), (0, 255, 0)])
    register_folder(store, tmp_path / "photos")
    folder = tmp_path / "thumbnails"

    run = detect_faces(store, StubDetector(), thumbnails=ThumbnailTarget(folder, 32))

    assert run.thumbnails == run.faces == 2 and run.thumbnail_error is None
    assert store.faces_without_thumbnail() == []  # nothing left for the thumbnail step
    written = sorted(p.relative_to(folder) for p in folder.rglob("*.jpg"))
    assert len(written) == 2
    for face in store.faces_without_embedding():
        with Image.open(folder / thumbnail_relpath(face.path, face.box_xyxy, 32)) as image:
            assert image.size == (32, 32)


def test_an_unwritable_thumbnail_folder_leaves_thumbnails_to_their_step(
    tmp_path: Path, store: FaceStore
) -> None:
    _photos(tmp_path / "photos", [(0, 0, 255), (0, 255, 0), (0, 0, 0)])
    register_folder(store, tmp_path / "photos")
    (tmp_path / "not-a-folder").write_text("")  # the thumbnail folder cannot be created under it

    run = detect_faces(store, StubDetector(), thumbnails=ThumbnailTarget(tmp_path / "not-a-folder" / "t", 32))

    assert run.faces == 3 and run.thumbnails == 0 and run.errors == []
    assert run.thumbnail_error is not None and "not-a-folder" in run.thumbnail_error
    assert store.pending_media_items() == []  # the faces are saved all the same
    assert len(store.faces_without_thumbnail()) == 3


# A detection run in its own process, killed (SIGKILL) half-way through a video: its thumbnail
# files are written frame by frame, its rows only with the whole video.
KILLED_IN_A_VIDEO = """
import sys, time
from pathlib import Path
from face_assets.core.face import ThumbnailTarget, VideoSampling, detect_faces
from face_assets.core.storage.store import FaceStore
from face_assets.core.vision.types import DetectedFace

class StuckAfterThreeFrames:
    name = "stub"
    frames = 0
    def load(self): pass
    def detect(self, image):
        StuckAfterThreeFrames.frames += 1
        if StuckAfterThreeFrames.frames > 3:
            time.sleep(600)
        return [DetectedFace((1.0, 1.0, 9.0, 9.0), 0.99, ((2.0, 2.0),) * 5)]

detect_faces(FaceStore.from_url(sys.argv[1]), StuckAfterThreeFrames(),
             thumbnails=ThumbnailTarget(Path(sys.argv[2]), 32), video=VideoSampling(fps=2.0))
"""


def test_thumbnails_of_a_video_killed_half_way_do_not_outlive_it(tmp_path: Path, store: FaceStore) -> None:
    library, folder = tmp_path / "videos", tmp_path / "thumbnails"
    library.mkdir()
    make_clip(library / "party.mp4", [Scene([], seconds=4.0)], fps=5, size=(64, 48))
    register_folder(store, library)
    run = subprocess.Popen([sys.executable, "-c", KILLED_IN_A_VIDEO, url_of(store), str(folder)])
    try:
        deadline = time.monotonic() + 120
        while len(list(folder.rglob("*.jpg"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        run.kill()
        run.wait()
    assert len(list(folder.rglob("*.jpg"))) == 3, "the run should have been killed inside the video"
    assert store.pending_media_items(), "nothing of the video is saved"

    # The next detection on this host, of any batch (here: of nothing), removes the files no
    # row names before it starts.
    detect_faces(store, StubDetector(), thumbnails=ThumbnailTarget(folder, 32), limit=0)

    assert list(folder.rglob("*.jpg")) == [], "thumbnail files without rows were left behind"
    assert not list((folder / ".unsaved").glob("*")), "the killed run's list stays"
