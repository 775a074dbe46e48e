"""Face tracks: one face followed across the sampled frames of a video, never two faces of one
frame in one track, and a new track where the face, its place or its time breaks off."""

from __future__ import annotations

import numpy as np

from face_assets.core.clustering.vectors import NOISE
from face_assets.core.track import collapse_tracks, expand_tracks, face_tracks


def person(seed: int, frames: int, noise: float = 0.15) -> np.ndarray:
    """`frames` embeddings of one face: one direction, a little noise per frame (pose, blur)."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=512)
    vectors = centre / np.linalg.norm(centre) + noise * rng.normal(size=(frames, 512)) / np.sqrt(512)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def box(x: float, y: float = 100.0, size: float = 80.0) -> list[float]:
    return [x, y, x + size, y + size]


def test_a_face_moving_across_frames_is_one_track() -> None:
    times = np.arange(6, dtype=float)
    boxes = np.array([box(100 + 30 * t) for t in times])

    labels = face_tracks(times, boxes, person(1, 6))

    assert labels.tolist() == [0] * 6


def test_two_people_side_by_side_are_two_tracks_even_as_they_cross() -> None:
    times = np.repeat(np.arange(5, dtype=float), 2)
    # They walk towards each other and pass: the embeddings, not the places, keep them apart.
    xs = [(100 + 40 * t, 260 - 40 * t) for t in range(5)]
    boxes = np.array([box(x) for pair in xs for x in pair])
    a, b = person(1, 5), person(2, 5)
    vectors = np.stack([v for pair in zip(a, b, strict=True) for v in pair])

    labels = face_tracks(times, boxes, vectors)

    assert labels[0::2].tolist() == [labels[0]] * 5
    assert labels[1::2].tolist() == [labels[1]] * 5
    assert labels[0] != labels[1]


def test_a_cut_to_another_person_in_the_same_place_starts_a_track() -> None:
    times = np.arange(6, dtype=float)
    boxes = np.array([box(200)] * 6)
    vectors = np.vstack([person(1, 3), person(2, 3)])

    labels = face_tracks(times, boxes, vectors)

    assert labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_a_face_missed_briefly_continues_and_one_gone_long_starts_again() -> None:
    times = np.array([0.0, 1.0, 3.0, 4.0, 10.0, 11.0])  # missed at 2 s; gone from 5 s to 9 s
    boxes = np.array([box(200)] * 6)

    labels = face_tracks(times, boxes, person(1, 6))

    assert labels.tolist() == [0, 0, 0, 0, 1, 1]


def test_the_same_face_far_away_at_once_is_another_track() -> None:
    # A second screen, a mirror, a cut to a wide shot: too far to be the same detection moving.
    times = np.arange(4, dtype=float)
    boxes = np.array([box(20), box(30), box(600), box(610)])

    labels = face_tracks(times, boxes, person(1, 4))

    assert labels.tolist() == [0, 0, 1, 1]


def test_no_faces_no_tracks() -> None:
    labels = face_tracks(np.zeros(0), np.zeros((0, 4)), np.zeros((0, 512), np.float32))
    assert labels.shape == (0,)


def test_a_long_track_is_seen_as_one_row_with_its_mean_weighing_at_most_a_small_person() -> None:
    track_ids = np.array([0, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0, 9], dtype=np.int64)
    vectors = np.vstack([person(1, 1), person(2, 10), person(3, 1), person(4, 1)])

    seen = collapse_tracks(track_ids, vectors, weight_cap=3)

    assert seen.rows[:2].tolist() == [0, 11]  # photos' faces as they are
    assert [t.tolist() for t in seen.tracks] == [list(range(1, 11)), [12]]
    assert seen.rows[seen.positions[0]].tolist() == [6]  # its middle face stands for it
    mean = vectors[1:11].mean(axis=0)
    assert np.allclose(seen.vectors[seen.positions[0]], mean / np.linalg.norm(mean), atol=1e-6)
    assert len(seen.rows) == 2 + 1 + 1
    assert seen.weights.tolist() == [1, 1, 3, 1]  # ten faces count as min_cluster_size


def test_a_track_s_faces_all_go_where_its_row_went() -> None:
    track_ids = np.array([0, 5, 5, 5, 5, 5], dtype=np.int64)
    sightings = np.array([100, -1, -2, -3, -4, -5], dtype=np.int64)
    seen = collapse_tracks(track_ids, np.vstack([person(1, 1), person(2, 5)]), weight_cap=3)
    # The planning put the photo and the track in a new group.
    final = np.full(len(seen.rows), NOISE, dtype=np.int64)
    groups = [np.array([0, seen.positions[0][0]])]

    out, new = expand_tracks(seen, 6, final, groups, sightings)

    assert out.tolist() == [NOISE] * 6
    assert [g.tolist() for g in new] == [[0, 1, 2, 3, 4, 5]]


def test_two_tracks_on_screen_together_never_become_one_person() -> None:
    # Track 1 in frames 1-4, track 2 in frames 3-6 of the same video: both matched person 42.
    track_ids = np.array([1, 1, 1, 1, 2, 2, 2, 2], dtype=np.int64)
    sightings = -np.array([1, 2, 3, 4, 3, 4, 5, 6], dtype=np.int64)
    seen = collapse_tracks(track_ids, np.vstack([person(1, 4), person(2, 4)]), weight_cap=3)
    final = np.full(len(seen.rows), 42, dtype=np.int64)

    out, _ = expand_tracks(seen, 8, final, [], sightings)

    assert out.tolist() == [42] * 4 + [NOISE] * 4

    # A person who already has a face in one of a track's frames does not get the track.
    alone = collapse_tracks(track_ids[:4], person(1, 4), weight_cap=3)
    out, _ = expand_tracks(alone, 4, np.full(1, 42), [], sightings[:4], taken={(-2, 42)})
    assert out.tolist() == [NOISE] * 4
