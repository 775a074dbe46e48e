"""A library embedded by FaceNet fused with dlib's ResNet (640 values a face) is stored, summed,
checked and clustered as FaceNet's is, with the fused space's own thresholds."""

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update

from face_assets.core import correction
from face_assets.core.clustering.params import FUSED_DEFAULTS
from face_assets.core.person import update_persons
from face_assets.core.settings import get_settings
from face_assets.core.storage.codecs import FUSED_DIM
from face_assets.core.storage.schema import FacesTable
from face_assets.core.storage.store import FaceStore
from face_assets.core.track import face_tracks, track_params_for
from face_assets.core.vision.fused import FUSED, FusedEmbedder, landmarks_from_box
from face_assets_tests.core_tests.test_correction import FACE, add_faces


def fused_identities(seed: int, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """k identities of n unit vectors in 640-d whose faces are 0.95 alike, as one person's
    faces are in the fused space (different identities about 0)."""
    rng = np.random.default_rng(seed)
    sigma = np.sqrt((1 / 0.95 - 1) / FUSED_DIM)
    centres = rng.normal(size=(k, FUSED_DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.repeat(centres, n, axis=0) + rng.normal(scale=sigma, size=(k * n, FUSED_DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), np.repeat(np.arange(k), n)


def stored_means(store: FaceStore) -> dict[int, np.ndarray]:
    means = store.person_means()
    return {int(p): c for p, c in zip(means.person_ids, means.centroids, strict=True)}


def test_fused_embeddings_make_persons_whose_sums_follow_every_change(tmp_path: Path, db_url: str) -> None:
    store = FaceStore.from_url(db_url, upgrade=True)
    vectors, truth = fused_identities(seed=5, k=3, n=6)
    face_ids = add_faces(store, tmp_path / "photos", vectors, model=FusedEmbedder.name)
    params = get_settings(embedder=FUSED).cluster_params()
    assert update_persons(store, params).new_persons == 3
    persons = {
        p.id: [f.id for f in correction.person_faces(store, p.id)] for p in correction.list_persons(store)
    }
    vector_of = dict(zip(face_ids, vectors, strict=True))
    for members in persons.values():
        assert len({int(truth[face_ids.index(f)]) for f in members}) == 1  # one identity each

    def expected(members: list[int]) -> np.ndarray:
        total = np.sum([vector_of[f] for f in members], axis=0)
        return total / np.linalg.norm(total)

    means = stored_means(store)
    for person, members in persons.items():
        assert means[person].shape == (FUSED_DIM,)
        assert np.allclose(means[person], expected(members), atol=1e-5)
    # A face moved by the user: both persons' sums follow, without reading the library.
    (source, moved_from), (target, moved_to) = list(persons.items())[:2]
    correction.move_face(store, moved_from[0], target, force=True)
    means = stored_means(store)
    assert np.allclose(means[source], expected(moved_from[1:]), atol=1e-5)
    assert np.allclose(means[target], expected([*moved_to, moved_from[0]]), atol=1e-5)
    assert store.embedding_problems() == (len(face_ids), [])


def test_an_embedding_of_the_wrong_length_for_its_model_is_named(tmp_path: Path, db_url: str) -> None:
    store = FaceStore.from_url(db_url, upgrade=True)
    vectors, _ = fused_identities(seed=6, k=1, n=2)
    short = vectors[:, :512] / np.linalg.norm(vectors[:, :512], axis=1, keepdims=True)
    face_ids = add_faces(store, tmp_path / "photos", short, model=FusedEmbedder.name)
    checked, problems = store.embedding_problems()
    assert checked == 2
    assert problems == [f"face {f}: shape (512,), expected ({FUSED_DIM},)" for f in face_ids]


def test_the_fused_embedder_takes_its_own_thresholds_unless_a_knob_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    facenet = get_settings().cluster_params()
    fused = get_settings(embedder=FUSED).cluster_params()
    assert {name: getattr(fused, name) for name in FUSED_DEFAULTS} == FUSED_DEFAULTS
    assert all(
        getattr(facenet, name) < value for name, value in FUSED_DEFAULTS.items() if "threshold" in name
    )
    # The library's embeddings decide, whatever embedder a Dagster resource or the settings name.
    assert get_settings().cluster_params(FusedEmbedder.name) == fused
    assert get_settings(embedder=FUSED).cluster_params("facenet-20180402-114759") == facenet
    monkeypatch.setenv("FACE_ASSETS_MATCH_THRESHOLD", "0.95")
    chosen = get_settings(embedder=FUSED).cluster_params()
    assert chosen.match_threshold == 0.95
    assert chosen.vote_threshold == FUSED_DEFAULTS["vote_threshold"]


def test_the_embedding_step_gets_each_face_with_its_landmarks(tmp_path: Path, db_url: str) -> None:
    """The fused embedder aligns dlib's chip by the five landmarks detection stored; a face a
    legacy tool stored without them comes with None (aligned by its box)."""
    store = FaceStore.from_url(db_url, upgrade=True)
    vectors, _ = fused_identities(seed=7, k=1, n=2)
    add_faces(store, tmp_path / "photos", vectors, model=None)
    first, second = store.faces_without_embedding()
    assert first.landmarks == FACE.landmarks
    with store.engine.begin() as conn:
        conn.execute(update(FacesTable).where(FacesTable.c.Id == second.id).values(Landmarks=None))
    assert [r.landmarks for r in store.faces_without_embedding()] == [FACE.landmarks, None]


def test_landmarks_guessed_from_a_box_fall_where_a_frontal_face_has_them() -> None:
    points = landmarks_from_box((100.0, 200.0, 200.0, 300.0))
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    assert left_eye[0] < nose[0] < right_eye[0] and left_eye[1] == right_eye[1] < nose[1] < mouth_left[1]
    assert nose[0] == pytest.approx(150.0) and mouth_left[1] == mouth_right[1]
    assert ((points >= 100) & (points <= 300)).all()


def test_two_people_one_after_the_other_in_a_fused_library_are_two_tracks() -> None:
    """Different people are nearer in the fused space: two faces at one spot 0.8 alike (a pair of
    strangers there, one face's frames in FaceNet's) are not followed as one face."""
    first = np.zeros(FUSED_DIM, np.float32)
    first[0] = 1.0
    second = np.zeros(FUSED_DIM, np.float32)
    second[:2] = (0.8, 0.6)  # cosine 0.8 with the first
    times, boxes = np.array([0.0, 0.5]), np.array([[10.0, 10.0, 60.0, 60.0]] * 2)
    vectors = np.stack([first, second])
    assert len(set(face_tracks(times, boxes, vectors, track_params_for(FusedEmbedder.name)))) == 2
    assert len(set(face_tracks(times, boxes, vectors, track_params_for("facenet-20180402-114759")))) == 1
