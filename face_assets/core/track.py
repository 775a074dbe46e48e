"""Face tracks: the detections of one face across the sampled frames of a video. Pure: no model,
no database."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from face_assets.core.clustering.vectors import NOISE, l2_normalize
from face_assets.core.storage.codecs import FUSED_MARK


@dataclass(frozen=True)
class TrackParams:
    # Same face in two sampled frames: FaceNet puts consecutive frames of one face far above
    # this (0.8 to 0.95), while two different people pass it about once in ten thousand pairs
    # on the tuning set (99.99th percentile 0.61); the box gate below keeps that rarer still.
    min_similarity: float = 0.6
    # A face may be missed in a frame or two (turned away, blurred) and still continue.
    max_gap_s: float = 3.0
    # How far the box centre may move between two detections, in box sizes (a pan, a walk).
    max_shift: float = 1.5
    # How much the box may grow or shrink between two detections (a zoom).
    max_scale: float = 2.0


# The same bar in the space of FaceNet fused with dlib's ResNet (core/vision/fused.py), where
# different people's faces are nearer: the cosine as few of the tuning set's different-person
# pairs reach (1 in 10 000: 0.855 there, 0.61 in FaceNet's).
FUSED_MIN_SIMILARITY = 0.855


def track_params_for(model: str | None) -> TrackParams:
    """The tracking parameters for embeddings of `model` (a Faces.EmbeddingModel)."""
    return (
        TrackParams(min_similarity=FUSED_MIN_SIMILARITY) if model and FUSED_MARK in model else TrackParams()
    )


def face_tracks(
    times: NDArray[np.float64],
    boxes: NDArray[np.float64],
    vectors: NDArray[np.float32],
    params: TrackParams | None = None,
) -> NDArray[np.int64]:
    """A track number (0, 1, ...) for each face of one video, in the order of the rows.

    Frames are taken in time order; each face joins the live track whose last face it resembles
    most (one-to-one, so two faces of one frame are never one track) when the boxes are near and
    of a like size and the embeddings agree; otherwise it starts a track."""
    from scipy.optimize import linear_sum_assignment  # a fifth of a second: only videos need it

    params = params or TrackParams()
    n = len(times)
    labels = np.full(n, NOISE, dtype=np.int64)
    if n == 0:
        return labels
    unit = l2_normalize(vectors)
    last_face: list[int] = []  # per track, its latest face's row
    for at in np.unique(times):
        rows = np.flatnonzero(times == at)
        live = [t for t, face in enumerate(last_face) if at - times[face] <= params.max_gap_s + 1e-9]
        if live:
            previous = np.array([last_face[t] for t in live])
            score = unit[rows] @ unit[previous].T
            score[~_near(boxes[rows], boxes[previous], params)] = -np.inf
            score[score < params.min_similarity] = -np.inf
            chosen_rows, chosen_tracks = linear_sum_assignment(np.where(np.isfinite(score), -score, 1e6))
            for r, t in zip(chosen_rows, chosen_tracks, strict=True):
                if np.isfinite(score[r, t]):
                    labels[rows[r]] = live[t]
                    last_face[live[t]] = int(rows[r])
        for row in rows:
            if labels[row] < 0:
                labels[row] = len(last_face)
                last_face.append(int(row))
    return labels


def _near(
    current: NDArray[np.float64], previous: NDArray[np.float64], params: TrackParams
) -> NDArray[np.bool_]:
    """(current, previous) pairs whose boxes are close and of a like size."""
    size_now = np.maximum(current[:, 2] - current[:, 0], current[:, 3] - current[:, 1])[:, None]
    size_before = np.maximum(previous[:, 2] - previous[:, 0], previous[:, 3] - previous[:, 1])[None, :]
    centre_now = (current[:, :2] + current[:, 2:]) / 2
    centre_before = (previous[:, :2] + previous[:, 2:]) / 2
    shift = np.linalg.norm(centre_now[:, None, :] - centre_before[None, :, :], axis=2)
    scale = np.maximum(size_now, size_before) / np.maximum(np.minimum(size_now, size_before), 1e-6)
    return (shift <= params.max_shift * np.maximum(size_now, size_before)) & (scale <= params.max_scale)


@dataclass(frozen=True)
class Collapsed:
    """A library as the person planning sees it: each face of a photo, and each video track as
    one row carrying the track's mean embedding, so that a face on screen for ten minutes is
    one observation, not six hundred near-duplicates. A track's `weight` is the evidence it
    gives that a person exists: its faces, up to min_cluster_size, so one scene of a few sharp
    frames can make a person while it still counts once for density, votes and means."""

    rows: NDArray[np.int64]  # library rows the planning sees, in order
    vectors: NDArray[np.float32]  # row-aligned with `rows`
    weights: NDArray[np.int64]  # row-aligned with `rows`: 1 for a photo's face
    tracks: list[NDArray[np.int64]]  # library rows of each track (every face of it)
    positions: list[NDArray[np.int64]]  # position in `rows` of each track's row

    def covered(self, size: int) -> NDArray[np.bool_]:
        """Which of the library's `size` rows the planning compared: seen, or in a seen track."""
        out = np.zeros(size, dtype=bool)
        out[self.rows] = True
        for members in self.tracks:
            out[members] = True
        return out


def collapse_tracks(
    track_ids: NDArray[np.int64],
    vectors: NDArray[np.float32],
    weight_cap: int,
    usable: NDArray[np.bool_] | None = None,
) -> Collapsed:
    """`track_ids` per library row, 0 for a face in no track (a photo's). Rows not `usable`
    (too poor to be compared: person.comparable) are left out: a photo's face is not seen; a track is
    seen by its usable frames (its mean, its weight) and still carries all its faces, as its
    frames are one face by construction; a track with none is not seen."""
    usable = np.ones(len(track_ids), dtype=bool) if usable is None else usable
    solo = np.flatnonzero((track_ids <= 0) & usable)
    in_tracks = np.flatnonzero(track_ids > 0)
    in_tracks = in_tracks[np.argsort(track_ids[in_tracks], kind="stable")]
    every = np.split(in_tracks, np.flatnonzero(np.diff(track_ids[in_tracks])) + 1) if len(in_tracks) else []
    tracks = [members for members in every if usable[members].any()]
    rows = np.empty(len(solo) + len(tracks), dtype=np.int64)
    rows[: len(solo)] = solo
    chosen = np.empty((len(rows), vectors.shape[1] if vectors.ndim == 2 else 0), dtype=np.float32)
    chosen[: len(solo)] = vectors[solo]
    weights = np.ones(len(rows), dtype=np.int64)
    positions = []
    for k, members in enumerate(tracks):
        at = len(solo) + k
        sharp = members[usable[members]]
        mean = vectors[sharp].astype(np.float64).mean(axis=0)
        chosen[at] = l2_normalize(mean[None])[0]
        # Its middle face stands for it where the planning needs one (its frame, for instance).
        rows[at] = sharp[len(sharp) // 2]
        weights[at] = min(len(sharp), weight_cap)
        positions.append(np.array([at], dtype=np.int64))
    return Collapsed(rows, chosen if len(vectors) else vectors, weights, tracks, positions)


def expand_tracks(
    collapsed: Collapsed,
    size: int,
    final: NDArray[np.int64],
    groups: list[NDArray[np.int64]],
    sightings: NDArray[np.int64],
    taken: set[tuple[int, int]] | None = None,
) -> tuple[NDArray[np.int64], list[NDArray[np.int64]]]:
    """The planning's outcome (`final` person id or NOISE per seen row, new `groups` of seen
    positions) for the library's `size` rows: each track's faces all go where its row went.

    A track whose faces would share a frame with a face of the same person (another track seen
    at the same time, or a `taken` (sighting, person) pair) is left without a person: two
    people on screen together are never one person. Longer tracks are placed first."""
    seen = len(collapsed.rows)
    group_of = np.full(seen, -1, dtype=np.int64)
    for k, members in enumerate(groups):
        group_of[members] = k
    # One code per outcome: an existing person id (>= 0), -2 - k for new group k, or NOISE.
    codes = np.where(group_of >= 0, -2 - group_of, final)
    representative = np.zeros(seen, dtype=bool)  # a track's row
    for positions in collapsed.positions:
        representative[positions] = True
    out = np.full(size, NOISE, dtype=np.int64)
    members_of: list[list[int]] = [[] for _ in groups]
    used: dict[int, set[int]] = {}  # outcome -> the sightings (photos, frames) already in it

    def place(rows: NDArray[np.int64], code: int) -> None:
        if code >= 0:
            out[rows] = code
        elif code <= -2:
            members_of[-2 - code].extend(int(r) for r in rows)
        if code != NOISE:
            used.setdefault(code, set()).update(int(s) for s in sightings[rows])

    for position in np.flatnonzero(~representative):
        place(collapsed.rows[position : position + 1], int(codes[position]))
    for t in sorted(range(len(collapsed.tracks)), key=lambda t: -len(collapsed.tracks[t])):
        members = collapsed.tracks[t]
        values, counts = np.unique(codes[collapsed.positions[t]], return_counts=True)
        code = int(values[np.argmax(counts)])
        frames = {int(s) for s in sightings[members]}
        if code != NOISE and frames & used.get(code, set()):
            code = NOISE
        if code >= 0 and taken and any((s, code) in taken for s in frames):
            code = NOISE
        place(members, code)
    return out, [np.array(sorted(m), dtype=np.int64) for m in members_of if m]
