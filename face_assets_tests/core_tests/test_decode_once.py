"""A phone-size photo is decoded once per run, at the size detection needs; its faces are stored in
the full photo's upright pixels, and their thumbnails and embeddings come from that same decode
(or, for a face too small there, from one full decode)."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from sqlalchemy import select

import face_assets.core.face as face_step
import face_assets.core.vision.media as media
from face_assets.core.embedding import embed_faces
from face_assets.core.face import ThumbnailTarget, detect_faces
from face_assets.core.media_item import register_folder
from face_assets.core.storage.schema import FacesTable
from face_assets.core.storage.store import FaceStore, decode_embedding
from face_assets.core.thumbnail import write_thumbnails
from face_assets.core.vision.photo import decode_photo
from face_assets.core.vision.transforms import embedding_crop, square_thumbnail
from face_assets.core.vision.types import DetectedFace, RGBImage

PHONE = (4032, 3024)  # a 12 MP phone photo, landscape as the sensor stores it


class GreenSquareDetector:
    """Finds the pure green rectangles of an image, exactly: where the pixels say they are."""

    name = "green-squares"
    max_side_px = 1280

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def load(self) -> None:
        pass

    def detect(self, image: RGBImage) -> list[DetectedFace]:
        self.sizes.append((image.shape[1], image.shape[0]))
        mask = (image[..., 1] > 200) & (image[..., 0] < 60) & (image[..., 2] < 60)
        faces = []
        for columns in _runs(mask.any(axis=0)):
            rows = np.flatnonzero(mask[:, columns[0] : columns[1]].any(axis=1))
            box = (float(columns[0]), float(rows[0]), float(columns[1]), float(rows[-1] + 1))
            faces.append(DetectedFace(box, 0.99, ((box[0], box[1]),) * 5))
        return faces


def _runs(flags: NDArray[np.bool_]) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


class MeanColourEmbedder:
    """A unit vector from the crop's pixels, so two crops of the same face embed alike."""

    name = "mean-colour"
    dim = 512
    input_px = 160
    batch_size = 32

    def __init__(self) -> None:
        self.calls = 0

    def load(self) -> None:
        pass

    def cut(self, image: np.ndarray, box_xyxy: Sequence[float], landmarks: object) -> NDArray[np.float32]:
        return embedding_crop(image, tuple(box_xyxy), self.input_px)  # type: ignore[arg-type]

    def embed(self, crops: NDArray[np.float32]) -> NDArray[np.float32]:
        self.calls += 1
        small = crops.reshape(len(crops), 8, 20, 8, 20, 3).mean(axis=(2, 4)).reshape(len(crops), -1)
        vectors = np.concatenate([small, np.ones((len(crops), 512 - small.shape[1]))], axis=1)
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _phone_photo(path: Path, squares: list[tuple[int, int, int]], turned: bool) -> None:
    """A JPEG whose upright picture has green squares (x, y, side) on a textured background;
    `turned` stores it as phones do, pixels on their side and EXIF orientation 6."""
    width, height = PHONE
    rng = np.random.default_rng(7)
    ramp = np.linspace(40, 200, width, dtype=np.float32)[None, :, None]
    upright = np.clip(ramp + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)
    upright[..., 1] //= 2  # no stray green
    for x, y, side in squares:
        upright[y : y + side, x : x + side] = (0, 255, 0)
        upright[y + side // 3 : y + side // 2, x + side // 4 : x + side // 2] = (255, 40, 40)  # an "eye"
    image = Image.fromarray(upright)
    if turned:
        exif = Image.Exif()
        exif[0x0112] = 6  # the viewer turns it 90 degrees clockwise
        image.transpose(Image.Transpose.ROTATE_90).save(path, quality=92, exif=exif)
    else:
        image.save(path, quality=92)


@dataclass
class StoredFace:
    box: tuple[float, float, float, float]
    embedding: NDArray[np.float32] | None
    thumbnail: str | None


def _faces(store: FaceStore) -> list[StoredFace]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(FacesTable.c.BoundingBox, FacesTable.c.Embedding, FacesTable.c.ThumbnailPath)
        )
        return [
            StoredFace(tuple(json.loads(box)), decode_embedding(blob) if blob else None, thumbnail)
            for box, blob, thumbnail in rows
        ]


@pytest.fixture
def store(db_url: str) -> FaceStore:
    return FaceStore.from_url(db_url, upgrade=True)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int | None]]:
    """Every decode of a photo the detection step makes: (file name, the size asked for)."""
    seen: list[tuple[str, int | None]] = []

    def counted(path: Path, min_side: int | None = None):  # type: ignore[no-untyped-def]
        seen.append((Path(path).name, min_side))
        return decode_photo(path, min_side)

    monkeypatch.setattr(face_step, "decode_photo", counted)
    monkeypatch.setattr(media, "decode_photo", counted)
    return seen


@pytest.mark.parametrize("turned", [False, True], ids=["upright", "exif-turned"])
def test_a_phone_photo_is_decoded_once_at_the_detectors_size_and_its_faces_stored_in_full_pixels(
    tmp_path: Path, store: FaceStore, decodes: list[tuple[str, int | None]], turned: bool
) -> None:
    (tmp_path / "photos").mkdir()
    squares = [(400, 600, 600), (1500, 900, 480)]  # upright x, y, side in the 3024 x 4032 picture
    _phone_photo(tmp_path / "photos" / "IMG_0001.jpg", squares, turned)
    register_folder(store, tmp_path / "photos")
    detector, embedder = GreenSquareDetector(), MeanColourEmbedder()
    thumbnails = ThumbnailTarget(tmp_path / "thumbs", 112)

    run = detect_faces(store, detector, thumbnails=thumbnails, embedder=embedder)

    # One decode, at the JPEG scale nearest above the detector's 1,280 px: half of 4032.
    assert decodes == [("IMG_0001.jpg", 1280)] and run.full_decodes == 0
    assert detector.sizes == [(2016, 1512)]
    assert run.faces == run.thumbnails == run.embedded == 2 and embedder.calls == 1
    faces = sorted(_faces(store), key=lambda face: face.box[0])
    for face, (x, y, side) in zip(faces, sorted(squares), strict=True):
        assert face.box == pytest.approx((x, y, x + side, y + side), abs=4.0)
        assert face.embedding is not None and face.thumbnail is not None
    # Nothing is left for the later steps: they decode nothing again.
    assert write_thumbnails(store, thumbnails.folder, 112).faces == 0
    assert embed_faces(store, embedder).faces == 0
    assert len(decodes) == 1


def test_a_face_too_small_at_the_reduced_size_is_cut_from_the_full_photo(
    tmp_path: Path, store: FaceStore, decodes: list[tuple[str, int | None]]
) -> None:
    (tmp_path / "photos").mkdir()
    # 100 px in the full photo is 50 px at half size: its 160-px crop would be enlarged 2.7 times.
    squares = [(300, 500, 700), (2000, 1200, 100)]
    photo = tmp_path / "photos" / "group.jpg"
    _phone_photo(photo, squares, turned=False)
    register_folder(store, tmp_path / "photos")
    embedder = MeanColourEmbedder()

    run = detect_faces(
        store, GreenSquareDetector(), thumbnails=ThumbnailTarget(tmp_path / "thumbs", 112), embedder=embedder
    )

    assert run.faces == run.embedded == 2 and run.full_decodes == 1
    assert decodes == [("group.jpg", 1280), ("group.jpg", None)]  # the full decode once, for both
    full = decode_photo(photo).pixels
    stored = {round(face.box[2] - face.box[0], -1): face for face in _faces(store)}
    small = stored[100]
    expected = embedder.embed(embedding_crop(full, small.box, 160)[None])[0]
    assert np.dot(small.embedding, expected) > 0.9999
    # The large face's crops come from the half-size decode and agree with the full photo's.
    large = stored[700]
    from_full = embedder.embed(embedding_crop(full, large.box, 160)[None])[0]
    assert np.dot(large.embedding, from_full) > 0.999
    thumbnail = np.asarray(Image.open(tmp_path / "thumbs" / large.thumbnail).convert("RGB"), np.float32)
    expected_thumb = square_thumbnail(full, large.box, 112).astype(np.float32)
    assert np.abs(thumbnail - expected_thumb).mean() < 6.0  # JPEG and scaling, not another crop
