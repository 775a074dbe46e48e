"""Portraits: one representative face per person, kept stable unless a clearly better one arrives."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from face_assets.core.storage.persons import FaceEmbeddings, PortraitCandidate
from face_assets.core.storage.store import FaceStore

logger = logging.getLogger(__name__)

# A new portrait must beat the current one by this factor: portraits do not flicker.
REPLACE_MARGIN = 1.15
# Sharpness (variance of the Laplacian of a 112 px thumbnail) at which a face counts as sharp.
SHARP = 100.0
# Face width in pixels at which a face counts as large.
LARGE_PX = 150.0


@dataclass(frozen=True)
class FaceTraits:
    width_px: float
    frontal: float  # 1 = nose midway between the eyes, 0 = profile
    sharpness: float | None


def frontalness(landmarks: list[list[float]]) -> float:
    """From the five landmarks: how far the nose sits from the middle of the eyes, relative to
    the distance between the eyes."""
    if len(landmarks) < 3:
        return 0.5
    (lx, _), (rx, _), (nx, _) = landmarks[0][:2], landmarks[1][:2], landmarks[2][:2]
    eyes = abs(rx - lx)
    if eyes < 1e-6:
        return 0.0
    return float(max(0.0, 1.0 - 2.0 * abs(nx - (lx + rx) / 2.0) / eyes))


def portrait_scores(
    vectors: NDArray[np.float32], centroid: NDArray[np.float32], traits: list[FaceTraits]
) -> NDArray[np.float64]:
    """Score per face: central in its cluster first, then large, frontal and sharp."""
    central = np.clip(vectors @ centroid, 0.0, 1.0).astype(np.float64)
    size = np.array([min(t.width_px / LARGE_PX, 1.0) for t in traits])
    frontal = np.array([t.frontal for t in traits])
    sharp = np.array([0.5 if t.sharpness is None else min(t.sharpness / SHARP, 1.0) for t in traits])
    return central * (0.4 + 0.6 * frontal) * (0.6 + 0.4 * size) * (0.6 + 0.4 * sharp)


def _traits(candidate: PortraitCandidate) -> FaceTraits:
    box = candidate.box_xyxy
    return FaceTraits(box[2] - box[0], frontalness(candidate.landmarks), candidate.sharpness)


def choose_portraits(
    candidates: list[PortraitCandidate],
    centroids: dict[int, NDArray[np.float32]],
    current: dict[int, tuple[int | None, int | None]],
) -> list[tuple[int, int, int]]:
    """Pure: the new (person id, face id, media file id) for each person whose best candidate
    beats its current portrait by REPLACE_MARGIN. `candidates` must include each person's
    current portrait face, if it still has one, for it to be weighed."""
    file_of = {c.face_id: c.media_file_id for c in candidates}
    by_person: dict[int, list[PortraitCandidate]] = {}
    for candidate in candidates:
        if candidate.vector is not None and candidate.person_id in centroids:
            by_person.setdefault(candidate.person_id, []).append(candidate)
    changes = []
    for person_id, faces in by_person.items():
        held, held_file = current.get(person_id, (None, None))
        ids = [f.face_id for f in faces]
        # A portrait file chosen elsewhere (the media application, its users, legacy tools) is
        # theirs: it differs from the file of the face this product picked, or it has no face.
        if held_file is not None and file_of.get(held) != held_file:  # type: ignore[arg-type]
            continue
        vectors = np.vstack([f.vector for f in faces if f.vector is not None])
        scores = portrait_scores(vectors, centroids[person_id], [_traits(f) for f in faces])
        best = int(np.argmax(scores))
        if held in ids and scores[best] <= scores[ids.index(held)] * REPLACE_MARGIN:
            continue
        if ids[best] != held:
            changes.append((person_id, ids[best], faces[best].media_file_id))
    return changes


def update_portraits(
    store: FaceStore,
    person_ids: Sequence[int] | None = None,
    new_face_ids: Sequence[int] = (),
    library: FaceEmbeddings | None = None,
) -> int:
    """Chooses or keeps portraits; returns how many changed.

    Every person's (None): all assigned faces are weighed, as after a full clustering. Given
    persons (a batch's): only their current portraits and the faces that just joined them,
    against the means stored with the persons, so the work follows the batch, not the library.
    `library`: the embeddings a full clustering has read, so that they are not read again.
    """
    means = store.person_means()
    if person_ids is None:
        if library is None:
            candidates = store.portrait_candidates()
        else:
            row = {int(f): r for r, f in enumerate(library.face_ids)}
            candidates = [
                replace(c, vector=library.vectors[row[c.face_id]])
                for c in store.portrait_candidates(with_vectors=False)
                if c.face_id in row
            ]
        current = store.portraits()
    else:
        if not person_ids:
            return 0
        current = store.portraits(person_ids)
        held = [face for face, _ in current.values() if face is not None]
        candidates = store.portrait_candidates(person_ids=[], face_ids=[*held, *new_face_ids])
    wanted = set(current)
    centroids = {
        int(p): c for p, c in zip(means.person_ids, means.centroids, strict=True) if int(p) in wanted
    }
    changes = choose_portraits(candidates, centroids, current)
    store.save_portraits(changes)
    logger.info("portraits: %d changed", len(changes))
    return len(changes)
