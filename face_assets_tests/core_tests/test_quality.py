"""Faces too poor to compare (a dozen pixels, blurred): their thumbnail's sharpness keeps them
out of matching and clustering, as FaceNet makes such faces of different people alike, while
the user's decisions and a track's other frames still count."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from face_assets.core import correction
from face_assets.core.clustering.cluster import NOISE, ClusterParams
from face_assets.core.person import match_new_faces, rebuild_persons, update_persons
from face_assets.core.storage.store import FaceStore
from face_assets_tests.core_tests.synthetic import centres, identities, samples, unit
from face_assets_tests.core_tests.test_person import _add_face, _assignments, _store_with_faces, add_video

SHARP, POOR = 250.0, 10.0  # thumbnail sharpness of a face of 100 px and of one of 12 px
PHOTOS = itertools.count()


def _sharpen(store: FaceStore, face_ids: list[int], value: float) -> None:
    store.save_thumbnails([(f, f"{f}.jpg", f"{f}.jpg") for f in face_ids], [value] * len(face_ids))


def _poor_strangers(seed: int, count: int) -> NDArray[np.float32]:
    """Faces of `count` different people too small to tell apart: their own identity is nearly
    gone and what is left is what every such face shares (cosine about 0.8 to each other)."""
    rng = np.random.default_rng(seed)
    shared = centres(rng, 1)[0]
    return unit(2.0 * shared[None, :] + centres(rng, count))


def _library(tmp_path: Path, db_url: str) -> tuple[FaceStore, list[int], NDArray[np.float32]]:
    """Three people with six sharp photos each, clustered into three persons."""
    vectors, _ = identities(11, k=3, n=6)
    store, ids = _store_with_faces(tmp_path, db_url, vectors)
    _sharpen(store, ids, SHARP)
    assert update_persons(store, ClusterParams()).new_persons == 3
    return store, ids, vectors


def _add_poor(
    store: FaceStore, tmp_path: Path, vectors: NDArray[np.float32], sharpness: float | None
) -> list[int]:
    """One photo per face, embedded, with its thumbnail's sharpness (None: not yet measured)."""
    added = []
    for vector in vectors:
        _, ids = _add_face(store, tmp_path / f"small_{next(PHOTOS)}.jpg", vector[None, :])
        added += ids
    if sharpness is not None:
        _sharpen(store, added, sharpness)
    return added


def _first_person(tmp_path: Path, db_url: str) -> tuple[FaceStore, int, NDArray[np.float32]]:
    """The library, its first person, and a face as alike to that person as can be."""
    store, ids, vectors = _library(tmp_path, db_url)
    return store, _assignments(store)[ids[0]], unit(vectors[:6].mean(axis=0))[None, :]


@pytest.mark.parametrize("gate", [True, False])
def test_poor_faces_of_different_people_never_make_a_person(tmp_path: Path, db_url: str, gate: bool) -> None:
    store, _, _ = _library(tmp_path, db_url)
    poor = _add_poor(store, tmp_path, _poor_strangers(1, 4), POOR)
    params = ClusterParams() if gate else ClusterParams(min_sharpness=0.0)

    update = update_persons(store, params)

    persons = {_assignments(store)[f] for f in poor}
    if gate:
        assert persons == {NOISE} and update.new_persons == 0
        assert update.too_poor == 4
    else:  # without the gate, four strangers become one person: what the gate is for
        assert len(persons) == 1 and NOISE not in persons and update.new_persons == 1
    store.dispose()


def test_a_poor_face_waits_where_a_sharp_one_or_one_of_unknown_sharpness_joins(
    tmp_path: Path, db_url: str
) -> None:
    store, person, near = _first_person(tmp_path, db_url)
    poor, sharp, unknown = (_add_poor(store, tmp_path, near, s)[0] for s in (POOR, SHARP, None))

    match = match_new_faces(store, ClusterParams(), None)

    after = _assignments(store)
    assert (after[poor], after[sharp], after[unknown]) == (NOISE, person, person)
    assert (match.faces, match.matched, match.waiting, match.too_poor) == (3, 2, 1, 1)
    store.dispose()


def test_a_rebuild_unassigns_poor_faces_a_clustering_placed_but_never_the_users(
    tmp_path: Path, db_url: str
) -> None:
    store, person, near = _first_person(tmp_path, db_url)
    placed_by_run, placed_by_user = _add_poor(store, tmp_path, np.repeat(near, 2, axis=0), POOR)
    correction.move_face(store, placed_by_user, person)
    update_persons(store, ClusterParams(min_sharpness=0.0))  # placed before the gate was set
    assert _assignments(store)[placed_by_run] == person

    assert update_persons(store, ClusterParams()).changes.faces_unassigned == 0  # an update moves no one
    rebuilt = rebuild_persons(store, ClusterParams())

    after = _assignments(store)
    assert (after[placed_by_run], after[placed_by_user]) == (NOISE, person)
    assert rebuilt.too_poor == 1 and rebuilt.changes.faces_unassigned == 1
    store.dispose()


def test_a_track_is_placed_by_its_sharp_frames_with_its_blurred_ones(tmp_path: Path, db_url: str) -> None:
    """A newcomer in a video of 12 s: the frames of the first 4 s are blurred (a pan), the rest
    sharp. The track makes a person of all its frames, its mean taken from the sharp ones; a
    second video, blurred throughout, waits."""
    store, _, _ = _library(tmp_path, db_url)
    rng = np.random.default_rng(5)
    newcomer = centres(rng, 1)[0]
    frames = samples(rng, newcomer, 12, sigma=0.01)
    video = add_video(store, tmp_path / "pan.mp4", [float(t) for t in range(12)], frames)
    _sharpen(store, video[:4], POOR)
    _sharpen(store, video[4:], SHARP)
    blurred = add_video(store, tmp_path / "blurred.mp4", [float(t) for t in range(6)], _poor_strangers(2, 6))
    _sharpen(store, blurred, POOR)

    update = update_persons(store, ClusterParams())

    after = _assignments(store)
    assert len({after[f] for f in video}) == 1 and after[video[0]] != NOISE
    assert {after[f] for f in blurred} == {NOISE}
    assert update.new_persons == 1 and update.too_poor == 6
    store.dispose()
