"""Each person's embedding sum and count: right after every change, and what batch matching uses."""

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from sqlalchemy import select, update

from face_assets.core import correction
from face_assets.core.batch import IdRange
from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.person import match_new_faces, rebuild_persons, update_persons
from face_assets.core.storage.codecs import decode_embedding
from face_assets.core.storage.schema import FacesTable, PersonsTable
from face_assets.core.storage.store import FaceStore
from face_assets.core.vision.types import DetectedFace
from face_assets_tests.core_tests.synthetic import identities, unit

FACE = DetectedFace(box_xyxy=(10.0, 10.0, 50.0, 60.0), score=0.99, landmarks=((20.0, 30.0),) * 5)


def _add_photos(store: FaceStore, folder: Path, vectors: NDArray[np.float32], start: int = 0) -> list[int]:
    """One media item with one embedded face per vector; returns the face ids."""
    items = []
    for i in range(len(vectors)):
        item = store.register_media_file(folder / f"photo_{start + i}.jpg", "JPEG", 1000)
        assert item is not None
        assert store.save_detection(item, [FACE], "test", (100, 100))
        items.append(item)
    ids = [f.id for f in store.faces_without_embedding((min(items), max(items)))]
    store.save_embeddings(ids, vectors, "synthetic")
    return ids


def _assert_sums_match_faces(store: FaceStore) -> None:
    """Every person's stored sum and count equal what its faces give."""
    with store.engine.connect() as conn:
        persons = conn.execute(
            select(PersonsTable.c.Id, PersonsTable.c.EmbeddingSum, PersonsTable.c.EmbeddingCount)
        ).all()
        faces = conn.execute(
            select(FacesTable.c.PersonId, FacesTable.c.Embedding).where(
                FacesTable.c.PersonId.isnot(None),
                FacesTable.c.Embedding.isnot(None),
                FacesTable.c.IsRejected.is_not(True),
            )
        ).all()
    assert persons, "the test needs persons"
    for person in persons:
        own = [decode_embedding(f.Embedding) for f in faces if f.PersonId == person.Id]
        assert person.EmbeddingCount == len(own), f"person {person.Id}"
        if own:
            stored = decode_embedding(person.EmbeddingSum)
            np.testing.assert_allclose(stored, np.sum(own, axis=0), atol=1e-4, err_msg=f"person {person.Id}")


def _library(tmp_path: Path, db_url: str) -> tuple[FaceStore, list[int], NDArray[np.int64]]:
    vectors, truth = identities(seed=21, k=4, n=5)
    store = FaceStore.from_url(db_url, upgrade=True)
    ids = _add_photos(store, tmp_path, vectors)
    update_persons(store, ClusterParams())
    return store, ids, truth


def _person_of(store: FaceStore, face_id: int) -> int | None:
    with store.engine.connect() as conn:
        return conn.execute(select(FacesTable.c.PersonId).where(FacesTable.c.Id == face_id)).scalar_one()


def test_sums_follow_clustering_matching_and_every_correction(tmp_path: Path, db_url: str) -> None:
    store, ids, truth = _library(tmp_path, db_url)
    _assert_sums_match_faces(store)

    # A batch of new photos of known people, matched without a clustering.
    vectors, _ = identities(seed=21, k=4, n=7)
    fresh = vectors[[5, 6, 12, 13]]
    new_ids = _add_photos(store, tmp_path, fresh, start=100)
    match = match_new_faces(store, ClusterParams(), None)
    assert match.matched == 4
    _assert_sums_match_faces(store)

    persons = sorted({_person_of(store, f) for f in ids} - {None})
    correction.move_face(store, new_ids[0], persons[1])
    _assert_sums_match_faces(store)
    correction.reject_face(store, new_ids[1])
    _assert_sums_match_faces(store)
    face = ids[int(np.flatnonzero(truth == 2)[0])]
    owner = _person_of(store, face)
    assert owner is not None
    split = correction.split_person(store, owner, [face]).person_id
    _assert_sums_match_faces(store)
    correction.merge_persons(store, owner, [split])
    _assert_sums_match_faces(store)
    correction.forget_person(store, persons[-1], tmp_path / "thumbnails")
    _assert_sums_match_faces(store)
    rebuild_persons(store, ClusterParams())
    _assert_sums_match_faces(store)
    store.dispose()


def test_batch_matching_uses_the_stored_sums_not_the_library(tmp_path: Path, db_url: str) -> None:
    """With every known face's embedding gone, the persons' sums alone still match a new photo."""
    store, ids, truth = _library(tmp_path, db_url)
    person = _person_of(store, ids[int(np.flatnonzero(truth == 1)[0])])
    with store.engine.begin() as conn:
        conn.execute(update(FacesTable).values(Embedding=None))
    newcomer = unit(identities(seed=21, k=4, n=6)[0][[11]])
    new_id = _add_photos(store, tmp_path, newcomer, start=200)[0]
    item = store.face_embeddings().media_item_ids[0]
    id_range: IdRange = (int(item), int(item))

    match = match_new_faces(store, ClusterParams(), id_range)

    assert (match.faces, match.matched) == (1, 1)
    assert _person_of(store, new_id) == person
    store.dispose()


def test_persons_without_sums_get_them_from_their_faces(tmp_path: Path, db_url: str) -> None:
    """Rows another application wrote, or a database upgraded from an older release."""
    store, _, _ = _library(tmp_path, db_url)
    with store.engine.begin() as conn:
        conn.execute(update(PersonsTable).values(EmbeddingSum=None, EmbeddingCount=None))
    means = store.person_means()
    assert len(means.person_ids) == 4
    assert np.allclose(np.linalg.norm(means.centroids, axis=1), 1.0, atol=1e-5)
    _assert_sums_match_faces(store)
    store.dispose()


def test_a_face_given_a_person_elsewhere_joins_its_sum_when_embedded(tmp_path: Path, db_url: str) -> None:
    store, _, _ = _library(tmp_path, db_url)
    person = int(store.person_means().person_ids[0])
    item = store.register_media_file(tmp_path / "legacy.jpg", "JPEG", 1000)
    assert item is not None
    store.save_detection(item, [FACE], "test", (100, 100))
    (face,) = store.faces_without_embedding()
    with store.engine.begin() as conn:  # the media application assigned it before we embedded it
        conn.execute(update(FacesTable).where(FacesTable.c.Id == face.id).values(PersonId=person))
    store.save_embeddings([face.id], identities(seed=3, k=1, n=1)[0], "synthetic")
    _assert_sums_match_faces(store)
    store.dispose()


@pytest.mark.parametrize("clusterings", [1, 2])
def test_portrait_is_a_face_of_its_person_after_batches(
    tmp_path: Path, db_url: str, clusterings: int
) -> None:
    store, _, _ = _library(tmp_path, db_url)
    for round_ in range(clusterings):
        vectors, _ = identities(seed=21, k=4, n=8 + round_)
        _add_photos(store, tmp_path, vectors[[6, 14]], start=300 + 10 * round_)
        match_new_faces(store, ClusterParams(), None)
    portraits = store.portraits()
    faces = store.faces_by_person()
    for person, (face, _) in portraits.items():
        assert face in {f.id for f in faces[person]}
    store.dispose()
