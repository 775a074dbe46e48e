"""Face tracks: the detections of one face across the sampled frames of a video. Pure: no model,
no database."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment


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
    params = params or TrackParams()
    n = len(times)
    labels = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return labels
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
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
