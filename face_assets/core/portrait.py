"""Portraits: one representative face per person, kept stable unless a clearly better one arrives."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import bindparam, select, update

from face_assets.core.clustering.cluster import person_centroids
from face_assets.core.storage.schema import FacesTable, MediaItemsTable, PersonsTable, utcnow
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


def update_portraits(store: FaceStore) -> int:
    """Chooses or keeps each person's portrait; returns how many changed."""
    data = store.face_embeddings()
    if not len(data.face_ids):
        return 0
    query = select(
        FacesTable.c.Id, FacesTable.c.BoundingBox, FacesTable.c.Landmarks, FacesTable.c.Sharpness,
        MediaItemsTable.c.MediaFileId,
    ).join(MediaItemsTable, MediaItemsTable.c.Id == FacesTable.c.MediaItemId)  # fmt: skip
    with store.engine.connect() as conn:
        details = {r.Id: r for r in conn.execute(query.where(FacesTable.c.PersonId.isnot(None)))}
        portraits = conn.execute(
            select(PersonsTable.c.Id, PersonsTable.c.PortraitFaceId, PersonsTable.c.PortraitMediaFileId)
        ).all()
        current = {r.Id: r.PortraitFaceId for r in portraits}
        # A portrait file chosen elsewhere (the media application, its users, legacy tools) is
        # theirs: it differs from the file of the face this product picked, or it has no face.
        chosen_elsewhere = {
            r.Id
            for r in portraits
            if r.PortraitMediaFileId is not None
            and (
                r.PortraitFaceId not in details
                or details[r.PortraitFaceId].MediaFileId != r.PortraitMediaFileId
            )
        }
    ids, centroids = person_centroids(data.vectors, data.person_ids)
    changes = []
    for person_id, centroid in zip(ids.tolist(), centroids, strict=True):
        if person_id in chosen_elsewhere:
            continue
        rows = np.flatnonzero(data.person_ids == person_id)
        faces = [int(data.face_ids[r]) for r in rows]
        traits = []
        for face_id in faces:
            row = details.get(face_id)
            box = json.loads(row.BoundingBox) if row is not None and row.BoundingBox else [0, 0, 0, 0]
            marks = json.loads(row.Landmarks) if row is not None and row.Landmarks else []
            traits.append(FaceTraits(box[2] - box[0], frontalness(marks), row.Sharpness if row else None))
        scores = portrait_scores(data.vectors[rows], centroid, traits)
        best = int(np.argmax(scores))
        held = current.get(person_id)
        if held in faces and scores[best] <= scores[faces.index(held)] * REPLACE_MARGIN:
            continue
        if faces[best] != held and faces[best] in details:
            changes.append({"person_id": person_id, "PortraitFaceId": faces[best],
                            "PortraitMediaFileId": details[faces[best]].MediaFileId})  # fmt: skip
    if changes:
        with store.engine.begin() as conn:
            conn.execute(
                update(PersonsTable).where(PersonsTable.c.Id == bindparam("person_id")),
                [{**c, "ModifiedAt": utcnow()} for c in changes],
            )
    logger.info("portraits: %d changed", len(changes))
    return len(changes)
