"""Faces of a dozen pixels in real photos, through Dagster with the real models: the thumbnails
step measures them too blurred to compare, they wait unassigned, and the persons of the sharp
photos are whole beside them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from face_assets.core.clustering.params import ClusterParams
from face_assets.core.settings import get_settings
from face_assets.core.storage.schema import FacesTable
from face_assets.core.storage.store import FaceStore
from face_assets.core.vision.models import detector_for
from face_assets_devtools.labelled import shrunk_photo
from face_assets_tests.conftest import IDENTITIES, PHOTOS_PER_IDENTITY, models
from face_assets_tests.test_assets import run_pipeline

FACE_PX = 11  # a dozen pixels: FaceNet makes such faces of different people alike


@pytest.mark.slow
def test_faces_of_a_dozen_pixels_wait_beside_whole_persons(
    tmp_path: Path, celebrity_folder: Path, models_dir: Path
) -> None:
    library = tmp_path / "photos"
    small: set[str] = set()
    with models("real"):
        detector = detector_for(get_settings())
        for identity in IDENTITIES:
            photos = sorted((celebrity_folder / "train" / identity).glob("*.jpg"))
            (library / identity).mkdir(parents=True)
            for photo in photos[:PHOTOS_PER_IDENTITY]:
                shutil.copy(photo, library / identity / photo.name)
            for photo in photos[PHOTOS_PER_IDENTITY : 2 * PHOTOS_PER_IDENTITY]:
                image = Image.open(photo).convert("RGB")
                widths = [f.box_xyxy[2] - f.box_xyxy[0] for f in detector.detect(np.asarray(image))]
                # Blurred as if the face were FACE_PX wide, as far in a group shot's background.
                target = library / identity / f"small-{photo.name}"
                shrunk_photo(image, max(widths) / FACE_PX).save(target, quality=90)
                small.add(str(target.resolve()))
        url = f"sqlite:///{tmp_path / 'faces.db'}"
        run = run_pipeline(library, url, tmp_path / "thumbnails")
    assert run.success

    store = FaceStore.from_url(url)
    items = store.media_items_by_path()
    faces = store.faces_of_media_items()
    with store.engine.connect() as conn:
        sharpness = dict(conn.execute(select(FacesTable.c.Id, FacesTable.c.Sharpness)).all())
    store.dispose()
    cut = ClusterParams().min_sharpness
    # The face of each photo (its largest), by the photo's path.
    face_of = {
        str(path): max(faces[item], key=lambda f: f["box_xyxy"][2] - f["box_xyxy"][0])
        for path, item in items.items()
        if faces.get(item)
    }
    tiny = [f for path, f in face_of.items() if path in small]
    sharp = {path: f for path, f in face_of.items() if path not in small}
    below = [f for group in faces.values() for f in group if sharpness[f["id"]] < cut]
    assert len(tiny) >= len(small) // 2, "the detector finds most faces of a dozen pixels"
    assert sum(sharpness[f["id"]] < cut for f in tiny) >= 0.75 * len(tiny)  # measured as what they are
    assert all(sharpness[f["id"]] >= cut for f in sharp.values())
    assert [f["person_id"] for f in below] == [None] * len(below)
    assert run.metadata()["person_clusters"]["unassigned_too_poor_to_compare"] == len(below)
    # The sharp photos of each identity are one person, none shared (as without the tiny ones,
    # test_assets: an outlier photo may wait).
    persons = {}
    for identity in IDENTITIES:
        own = [f["person_id"] for path, f in sharp.items() if Path(path).parent.name == identity]
        assigned = {p for p in own if p is not None}
        assert len(assigned) == 1 and own.count(None) <= 1, (identity, own)
        persons[identity] = assigned.pop()
    assert len(set(persons.values())) == len(IDENTITIES)
