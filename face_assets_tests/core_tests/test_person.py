import dataclasses
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from face_assets.core import correction
from face_assets.core.clustering.cluster import NOISE, ClusterParams
from face_assets.core.embedding import assign_tracks
from face_assets.core.person import PersonChanges, plan_persons, rebuild_persons, update_persons
from face_assets.core.storage.store import FaceStore
from face_assets.core.vision.types import DetectedFace
from face_assets_tests.core_tests.synthetic import SIGMA, Algorithm, centres, identities, samples, unit

ALGORITHMS = ["agglomerative", "hdbscan", "dbscan"]


def _library(seed: int = 0, k: int = 6, n: int = 5, strangers: int = 0) -> tuple[NDArray, NDArray, NDArray]:
    """(media item ids, vectors, identity per face): one face per media item, strangers labelled -1."""
    vectors, truth = identities(seed, k, n)
    if strangers:
        vectors = np.vstack([vectors, centres(np.random.default_rng(seed + 500), strangers)])
        truth = np.concatenate([truth, np.full(strangers, -1)])
    return np.arange(len(vectors), dtype=np.int64), vectors, truth


def _first_plan(
    media: NDArray, vectors: NDArray, params: ClusterParams
) -> tuple[NDArray[np.int64], list[NDArray[np.int64]], bool]:
    unassigned = np.full(len(vectors), NOISE, dtype=np.int64)
    return plan_persons(media, unassigned, np.zeros(len(vectors), dtype=bool), vectors, params)


def _apply(final: NDArray[np.int64], groups: list[NDArray[np.int64]], first_id: int) -> NDArray[np.int64]:
    applied = final.copy()
    for k, group in enumerate(groups):
        applied[group] = first_id + k
    return applied


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_first_plan_creates_one_pure_group_per_identity(algorithm: Algorithm) -> None:
    media, vectors, truth = _library()
    final, groups, ran = _first_plan(media, vectors, ClusterParams(algorithm=algorithm))
    assert ran
    assert final.tolist() == [NOISE] * len(vectors)  # nobody existed before: all are new groups
    assert sorted(int(truth[g[0]]) for g in groups) == list(range(6))
    for group in groups:
        assert len(set(truth[group].tolist())) == 1
    assert sum(len(g) for g in groups) >= 0.9 * len(vectors)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_group_never_holds_two_faces_of_one_media_item(algorithm: Algorithm) -> None:
    media, vectors, truth = _library()
    # Media item 0 shows identity 0 twice, nearly identically (a reflection, a photo in the photo).
    twin = unit(vectors[0] + 0.001 * np.random.default_rng(7).normal(size=vectors.shape[1]))
    media = np.append(media, 0)
    vectors = np.vstack([vectors, twin])
    final, groups, _ = _first_plan(media, vectors, ClusterParams(algorithm=algorithm))
    for group in groups:
        assert len(set(media[group].tolist())) == len(group)
    grouped = np.concatenate(groups)
    assert (0 in grouped) != (len(vectors) - 1 in grouped)  # exactly one of the twins is kept


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("strangers", [0, 15])
def test_plan_is_idempotent_on_unchanged_data(algorithm: Algorithm, strangers: int) -> None:
    media, vectors, _ = _library(seed=1, strangers=strangers)
    params = ClusterParams(algorithm=algorithm)
    final, groups, _ = _first_plan(media, vectors, params)
    applied = _apply(final, groups, first_id=101)
    again, new_groups, ran = plan_persons(media, applied, np.ones(len(vectors), dtype=bool), vectors, params)
    assert new_groups == []
    assert not ran
    np.testing.assert_array_equal(again, applied)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_new_face_joins_the_existing_person_it_resembles(algorithm: Algorithm) -> None:
    media, vectors, truth = _library(seed=2)
    person_of_identity = 40 + truth  # every existing face already belongs to its identity's person
    rng = np.random.default_rng(11)
    estimate = vectors[truth == 3].mean(axis=0)  # a fresh photo of identity 3
    new_face = unit(estimate + 0.03 * rng.normal(size=estimate.shape))
    assert float(new_face @ unit(vectors[truth == 3].mean(axis=0))) > 0.5
    final, groups, _ = plan_persons(
        np.append(media, 999),
        np.append(person_of_identity, NOISE),
        np.append(np.ones(len(vectors), dtype=bool), False),
        np.vstack([vectors, new_face]),
        ClusterParams(algorithm=algorithm),
    )
    assert groups == []
    assert final[-1] == 43
    np.testing.assert_array_equal(final[:-1], person_of_identity)


def test_existing_assignments_are_never_changed() -> None:
    """Even a face 'wrongly' assigned by a user or a past run keeps its person."""
    media, vectors, truth = _library(seed=3)
    person_ids = 40 + truth
    person_ids[0] = 41  # identity 0's first face sits with identity 1's person
    final, _, _ = plan_persons(media, person_ids, np.ones(len(vectors), dtype=bool), vectors, ClusterParams())
    np.testing.assert_array_equal(final, person_ids)


def _store_with_faces(
    tmp_path: Path, db_url: str, vectors: NDArray[np.float32]
) -> tuple[FaceStore, list[int]]:
    store = FaceStore.from_url(db_url, upgrade=True)
    face = DetectedFace(box_xyxy=(10.0, 10.0, 50.0, 60.0), score=0.99, landmarks=((20.0, 30.0),) * 5)
    for i in range(len(vectors)):
        item = store.register_media_file(tmp_path / f"photo_{i}.jpg", "JPEG", 1000)
        assert item is not None
        assert store.save_detection(item, [face], "test", (100, 100))
    ids = [f.id for f in store.faces_without_embedding()]
    store.save_embeddings(ids, vectors, "synthetic")
    return store, ids


def _assignments(store: FaceStore) -> dict[int, int]:
    data = store.face_embeddings()
    return dict(zip(data.face_ids.tolist(), data.person_ids.tolist(), strict=True))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_update_persons_twice_changes_nothing_the_second_time(
    tmp_path: Path, db_url: str, algorithm: Algorithm
) -> None:
    _, vectors, _ = _library(seed=4, k=4, n=4, strangers=5)
    store, _ = _store_with_faces(tmp_path, db_url, vectors)
    params = ClusterParams(algorithm=algorithm)
    first = update_persons(store, params)
    assert first.new_persons >= 4 and first.faces == len(vectors)
    before = _assignments(store)
    persons = store.counts()["persons"]

    second = update_persons(store, params)

    assert (second.new_persons, second.matched_to_existing, second.clustered) == (0, 0, False)
    assert _assignments(store) == before
    assert store.counts()["persons"] == persons
    store.dispose()


def test_update_persons_assigns_a_new_photo_to_its_person(tmp_path: Path, db_url: str) -> None:
    _, vectors, truth = _library(seed=5, k=3, n=5)
    store, face_ids = _store_with_faces(tmp_path, db_url, vectors)
    update_persons(store, ClusterParams())
    person_of_identity_1 = _assignments(store)[face_ids[int(np.flatnonzero(truth == 1)[0])]]
    assert person_of_identity_1 >= 0

    new_vector = unit(vectors[truth == 1].mean(axis=0))[None, :]
    _, new_ids = _add_face(store, tmp_path / "new.jpg", new_vector)
    summary = update_persons(store, ClusterParams())

    assert summary.matched_to_existing == 1 and summary.new_persons == 0
    assert _assignments(store)[new_ids[0]] == person_of_identity_1
    store.dispose()


def _add_face(store: FaceStore, path: Path, vector: NDArray[np.float32]) -> tuple[int, list[int]]:
    item = store.register_media_file(path, "JPEG", 1000)
    assert item is not None
    face = DetectedFace(box_xyxy=(1.0, 2.0, 30.0, 40.0), score=0.9, landmarks=((5.0, 5.0),) * 5)
    store.save_detection(item, [face], "test", (64, 64))
    ids = [f.id for f in store.faces_without_embedding()]
    store.save_embeddings(ids, vector, "synthetic")
    return item, ids


def add_video(store: FaceStore, path: Path, times: list[float], vectors: NDArray[np.float32]) -> list[int]:
    """One video with one face per listed second (the same box each time), embedded and followed
    into tracks by the product's tracker: its face ids, in time order."""
    item = store.register_media_file(path, "MP4", 1000)
    assert item is not None
    face = DetectedFace(box_xyxy=(10.0, 10.0, 50.0, 60.0), score=0.99, landmarks=((20.0, 30.0),) * 5)
    faces = [dataclasses.replace(face, frame=int(10 * t), time_s=t) for t in times]
    assert store.save_detection(item, faces, "test", (100, 100), video=(max(times) + 1, 10.0))
    records = [r for r in store.faces_without_embedding() if r.media_item_id == item]
    records.sort(key=lambda r: r.id)
    store.save_embeddings([r.id for r in records], vectors, "synthetic")
    assign_tracks(store)
    return [r.id for r in records]


def _scene(rng: np.random.Generator, centre: NDArray[np.float32], frames: int) -> NDArray[np.float32]:
    """Frames of one face in one scene: a pose of its own (as far from the person's other photos as
    a photo is), and from frame to frame nearly the same (cosine ~0.95, as FaceNet gives)."""
    pose = samples(rng, centre, 1)[0]
    return samples(rng, pose, frames, sigma=0.3 * SIGMA)


def _persons_of(store: FaceStore, face_ids: list[int]) -> list[int]:
    assignments = _assignments(store)
    return [assignments[f] for f in face_ids]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_new_video_gives_the_same_persons_in_an_incremental_run_and_a_rebuild(
    tmp_path: Path, db_url: str, seed: int
) -> None:
    """A person seen only in one video, in two scenes of 15 seconds: two tracks, each of them
    enough on its own to start a person (min_cluster_size faces). An incremental run placed
    neither (it counted rows, two, not faces) while a rebuild made persons of them."""
    _, vectors, _ = _library(seed=6 + seed, k=4, n=6)
    store, _ = _store_with_faces(tmp_path, db_url, vectors)
    assert update_persons(store, ClusterParams()).new_persons == 4
    rng = np.random.default_rng(60 + seed)
    newcomer = centres(rng, 1)[0]
    times = [float(t) for t in range(15)] + [float(t) for t in range(20, 35)]  # a cut of 5 s between
    scenes = np.vstack([_scene(rng, newcomer, 15), _scene(rng, newcomer, 15)])
    video = add_video(store, tmp_path / "party.mp4", times, scenes)
    data = store.face_embeddings()
    assert len(set(data.track_ids[np.isin(data.face_ids, video)].tolist())) == 2

    incremental = update_persons(store, ClusterParams())
    after_incremental = _persons_of(store, video)
    rebuilt = rebuild_persons(store, ClusterParams())

    assert min(after_incremental) >= 0, "a track of 15 faces that joins nobody starts a person"
    assert len(set(after_incremental[:15])) == len(set(after_incremental[15:])) == 1  # tracks go whole
    assert incremental.changes.faces_assigned == 30
    assert incremental.changes.persons_made == incremental.new_persons >= 1
    assert _persons_of(store, video) == after_incremental  # the same persons, the same ids
    assert rebuilt.changes == PersonChanges(0, 0, 0, 0, 0)
    store.dispose()


def _two_track_person(tmp_path: Path, db_url: str) -> tuple[FaceStore, list[int], list[int], int]:
    """Three persons of photos, and a newcomer seen in one video: a scene of 15 s, then after a
    cut the same shot for 2 s. The first track starts a person and the second joins it. Returns
    the store, the two tracks' face ids and the person of the photos' first identity."""
    _, vectors, _ = _library(seed=9, k=3, n=6)
    store, photo_faces = _store_with_faces(tmp_path, db_url, vectors)
    rng = np.random.default_rng(90)
    frames = _scene(rng, centres(rng, 1)[0], 17)
    video = add_video(store, tmp_path / "party.mp4", [float(t) for t in [*range(15), 20, 21]], frames)
    update_persons(store, ClusterParams())
    assert len(set(_persons_of(store, video))) == 1 and min(_persons_of(store, video)) >= 0
    return store, video[:15], video[15:], _assignments(store)[photo_faces[0]]


def test_a_rebuild_that_dissolves_a_person_says_so(tmp_path: Path, db_url: str) -> None:
    """A user moves one face of the long track into another person (the whole track goes). The
    short track is then too little to hold a person alone: the rebuild unassigns it and
    dissolves its person, and its summary says so rather than that it changed nothing."""
    store, long_track, short_track, other = _two_track_person(tmp_path, db_url)
    (newcomer,) = set(_persons_of(store, short_track))
    correction.move_face(store, long_track[0], other)

    rebuilt = rebuild_persons(store, ClusterParams())

    assert _persons_of(store, long_track) == [other] * 15  # the user's move stands
    assert _persons_of(store, short_track) == [NOISE] * 2
    assert newcomer not in {p.id for p in correction.list_persons(store)}
    assert rebuilt.changes == PersonChanges(
        faces_assigned=0, faces_unassigned=2, faces_moved=0, persons_made=0, persons_dissolved=1
    )
    store.dispose()


@pytest.mark.parametrize("rebuild", [False, True])
def test_persons_a_user_named_or_corrected_are_never_dissolved(
    tmp_path: Path, db_url: str, rebuild: bool
) -> None:
    """Even a clustering whose settings dissolve every automatic person (a minimum size above
    any person's) leaves a named person, and a person a user moved faces into, those faces."""
    store, long_track, _, other = _two_track_person(tmp_path, db_url)
    persons = sorted({p for p in _assignments(store).values() if p >= 0} - {other})
    correction.rename_person(store, persons[0], "Alice")
    correction.move_face(store, long_track[0], other)
    # What the user decided: every face of the named person, and the track moved in.
    kept = {persons[0]: {f.id for f in correction.person_faces(store, persons[0])}, other: set(long_track)}
    strict = ClusterParams(min_cluster_size=50)

    summary = (rebuild_persons if rebuild else update_persons)(store, strict)

    for person, faces in kept.items():
        assert {f.id for f in correction.person_faces(store, person)} >= faces, person
    remaining = {p.id for p in correction.list_persons(store)}
    assert {persons[0], other} <= remaining
    # A rebuild dissolves the automatic ones only: the third identity's and the newcomer's.
    assert summary.changes.persons_dissolved == (2 if rebuild else 0)
    assert (persons[1] in remaining) != rebuild
    store.dispose()
