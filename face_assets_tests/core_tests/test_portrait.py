"""Portraits: central, large, frontal and sharp faces win; portraits do not flicker."""

import json
from pathlib import Path

import numpy as np
from sqlalchemy import select

from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.person import update_persons
from face_assets.core.portrait import FaceTraits, frontalness, portrait_scores, update_portraits
from face_assets.core.storage.schema import FacesTable, MediaItemsTable, PersonsTable
from face_assets.core.storage.store import FaceStore
from face_assets_tests.conftest import sql
from face_assets_tests.core_tests.synthetic import identities
from face_assets_tests.core_tests.test_correction import add_faces


def test_frontalness_from_landmarks() -> None:
    assert frontalness([[40, 50], [60, 50], [50, 60], [42, 70], [58, 70]]) == 1.0
    assert frontalness([[40, 50], [60, 50], [60, 60], [42, 70], [58, 70]]) == 0.0
    assert 0.0 < frontalness([[40, 50], [60, 50], [55, 60], [42, 70], [58, 70]]) < 1.0


def test_scores_prefer_central_then_frontal_large_and_sharp() -> None:
    centroid = np.eye(4, dtype=np.float32)[0]
    vectors = np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]], dtype=np.float32)
    good = FaceTraits(200, 1.0, 500.0)
    traits = [good, good, FaceTraits(200, 0.0, 500.0), FaceTraits(30, 1.0, 5.0)]
    scores = portrait_scores(vectors, centroid, traits)
    assert int(np.argmax(scores)) == 0
    assert scores[0] > scores[1] and scores[0] > scores[2] and scores[0] > scores[3]


def portraits(store: FaceStore) -> dict[int, int]:
    with store.engine.connect() as conn:
        return {r.Id: r.PortraitFaceId for r in conn.execute(select(PersonsTable))}


def test_every_person_gets_a_portrait_of_its_own_that_stays_stable(tmp_path: Path, db_url: str) -> None:
    store = FaceStore.from_url(db_url, upgrade=True)
    vectors, _ = identities(seed=5, k=2, n=6)
    add_faces(store, tmp_path / "photos", vectors)
    frontal = json.dumps([[40, 50], [60, 50], [50, 60], [42, 70], [58, 70]])
    with store.engine.begin() as conn:
        conn.execute(sql(conn, 'UPDATE "Faces" SET "Landmarks" = :l'), {"l": frontal})
    update_persons(store, ClusterParams())  # sets the portraits
    chosen = portraits(store)
    with store.engine.connect() as conn:
        for person_id, face_id in chosen.items():
            face = conn.execute(select(FacesTable).where(FacesTable.c.Id == face_id)).mappings().one()
            assert face["PersonId"] == person_id
            item = conn.execute(
                select(MediaItemsTable).where(MediaItemsTable.c.Id == face["MediaItemId"])
            ).one()
            person = conn.execute(select(PersonsTable).where(PersonsTable.c.Id == person_id)).one()
            assert person.PortraitMediaFileId == item.MediaFileId
    assert update_portraits(store) == 0

    person_id, face_id = next(iter(chosen.items()))
    with store.engine.begin() as conn:  # a slightly sharper face elsewhere: not worth a change
        conn.execute(sql(conn, 'UPDATE "Faces" SET "Sharpness" = 60 WHERE "PersonId" = :p'), {"p": person_id})
        conn.execute(sql(conn, 'UPDATE "Faces" SET "Sharpness" = 55 WHERE "Id" = :f'), {"f": face_id})
    assert update_portraits(store) == 0
    with store.engine.begin() as conn:  # the portrait turns out to be a profile: a better face wins
        profile = json.dumps([[40, 50], [60, 50], [60, 60], [42, 70], [58, 70]])
        conn.execute(
            sql(conn, 'UPDATE "Faces" SET "Landmarks" = :l WHERE "Id" = :f'), {"l": profile, "f": face_id}
        )
    assert update_portraits(store) == 1
    assert portraits(store)[person_id] != face_id
