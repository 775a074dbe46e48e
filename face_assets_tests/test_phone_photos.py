"""A 12 MP phone photo, turned by EXIF as phones store it, through the real detector and embedder:
decoded at half size once, it gives the faces and embeddings of the photo decoded in full."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from face_assets.core.face import ThumbnailTarget, detect_faces
from face_assets.core.media_item import register_folder
from face_assets.core.settings import get_settings
from face_assets.core.storage.schema import FacesTable
from face_assets.core.storage.store import FaceStore, decode_embedding
from face_assets.core.vision.models import detector_for, embedder_for
from face_assets.core.vision.photo import decode_photo
from face_assets.core.vision.transforms import embedding_crop

pytestmark = pytest.mark.slow


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _group_photo(path: Path, sources: list[Path]) -> None:
    """A 4032 x 3024 upright picture: the first person large (a face of several hundred pixels,
    cut from the half-size decode), the others enlarged 1.3 and 1.6 times (faces of 100-250 px,
    the smallest cut from the full photo), stored turned with EXIF orientation 6."""
    canvas = Image.new("RGB", (3024, 4032), (96, 110, 120))
    large = Image.open(sources[0]).convert("RGB")
    canvas.paste(large.resize((large.width * 5, large.height * 5), Image.Resampling.BICUBIC), (200, 300))
    for n, source in enumerate(sources[1:]):
        small = Image.open(source).convert("RGB")
        small = small.resize((small.width * (13 + 3 * n) // 10, small.height * (13 + 3 * n) // 10))
        canvas.paste(small, (300 + 1200 * n, 2900))
    exif = Image.Exif()
    exif[0x0112] = 6
    canvas.transpose(Image.Transpose.ROTATE_90).save(path, quality=92, exif=exif)


def test_a_turned_phone_photo_gives_the_faces_and_embeddings_of_its_full_decode(
    tmp_path: Path, celebrity_folder: Path, models_dir: Path
) -> None:
    people = sorted((celebrity_folder / "train").iterdir())[:3]
    (tmp_path / "photos").mkdir()
    photo = tmp_path / "photos" / "IMG_0042.jpg"
    _group_photo(photo, [sorted(person.glob("*.jpg"))[0] for person in people])
    store = FaceStore.from_url(f"sqlite:///{tmp_path / 'faces.db'}", upgrade=True)
    register_folder(store, tmp_path / "photos")
    settings = get_settings()
    detector, embedder = detector_for(settings), embedder_for(settings)

    run = detect_faces(
        store, detector, thumbnails=ThumbnailTarget(tmp_path / "thumbs", 112), embedder=embedder
    )

    full = decode_photo(photo)
    assert full.pixels.shape[:2] == (4032, 3024)  # upright
    reference = detector.detect(full.pixels)
    assert run.faces == len(reference) >= 3 and run.embedded == run.faces == run.thumbnails
    # A face below 67 px in the half-size decode (its 160-px crop enlarged more than twice) is
    # cut from one full decode; the others from the half-size decode.
    smallest = min(max(face.width, face.height) for face in reference) / 2
    assert run.full_decodes == (smallest < 160 / 1.2 / 2) == 1
    with store.engine.connect() as conn:
        stored = [
            (tuple(json.loads(box)), decode_embedding(blob))
            for box, blob in conn.execute(select(FacesTable.c.BoundingBox, FacesTable.c.Embedding))
        ]
    for face in reference:
        box, vector = max(stored, key=lambda row: _iou(row[0], face.box_xyxy))
        assert _iou(box, face.box_xyxy) >= 0.9
        expected = embedder.embed(embedding_crop(full.pixels, face.box_xyxy, embedder.input_px)[None])[0]
        assert float(np.dot(vector, expected)) >= 0.99
