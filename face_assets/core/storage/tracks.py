"""Face tracks in the database: which faces of a video are one face followed across frames."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, bindparam, exists, false, or_, select, update

from face_assets.core.batch import IdRange
from face_assets.core.storage.codecs import decode_embedding, media_path
from face_assets.core.storage.fencing import FencedWrites
from face_assets.core.storage.schema import FacesTable, MediaFileTable, MediaItemsTable, utcnow
from face_assets.core.storage.terms import FILE_COLUMNS, in_range, not_rejected


@dataclass(frozen=True)
class VideoFaces:
    """The embedded faces of one video, row-aligned, in frame order."""

    media_item_id: int
    face_ids: NDArray[np.int64]
    times: NDArray[np.float64]
    boxes: NDArray[np.float64]  # (n, 4) x1, y1, x2, y2
    vectors: NDArray[np.float32]


class TracksMixin(FencedWrites):
    engine: Engine

    def videos_to_track(self, id_range: IdRange = None) -> list[VideoFaces]:
        """The videos whose faces are all embedded and not yet in tracks."""
        other = FacesTable.alias("OtherFace")
        waiting = exists().where(
            other.c.MediaItemId == FacesTable.c.MediaItemId,
            other.c.Embedding.is_(None),
            or_(other.c.IsRejected.is_(None), other.c.IsRejected == false()),
        )
        query = (
            select(
                FacesTable.c.Id,
                FacesTable.c.MediaItemId,
                FacesTable.c.FrameTime,
                FacesTable.c.BoundingBox,
                FacesTable.c.Embedding,
            )  # fmt: skip
            .join(MediaItemsTable, MediaItemsTable.c.Id == FacesTable.c.MediaItemId)
            .where(
                MediaItemsTable.c.Duration.isnot(None),
                FacesTable.c.TrackId.is_(None),
                FacesTable.c.Embedding.isnot(None),
                FacesTable.c.FrameTime.isnot(None),
                not_rejected(),
                ~waiting,
                *in_range(FacesTable.c.MediaItemId, id_range),
            )
            .order_by(FacesTable.c.MediaItemId, FacesTable.c.FrameTime, FacesTable.c.Id)
        )
        videos: dict[int, list[tuple[Any, NDArray[np.float32]]]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                vector = decode_embedding(row.Embedding)
                if vector is not None:  # an unreadable embedding stays out of every track
                    videos.setdefault(row.MediaItemId, []).append((row, vector))
        return [
            VideoFaces(
                item,
                np.array([r.Id for r, _ in rows], dtype=np.int64),
                np.array([r.FrameTime for r, _ in rows], dtype=np.float64),
                np.array([json.loads(r.BoundingBox)[:4] for r, _ in rows], dtype=np.float64),
                np.vstack([v for _, v in rows]).astype(np.float32),
            )
            for item, rows in videos.items()
        ]

    def video_boxes(self) -> dict[int, tuple[Path, list[Any]]]:
        """Every video's faces for its box file, by media item: the file, then rows of frame
        number, time, box (JSON), person id and track id, in frame order."""
        query = (
            select(
                FacesTable.c.MediaItemId,
                FacesTable.c.FrameNumber,
                FacesTable.c.FrameTime,
                FacesTable.c.BoundingBox,
                FacesTable.c.PersonId,
                FacesTable.c.TrackId,
                *FILE_COLUMNS,
            )  # fmt: skip
            .join(MediaItemsTable, MediaItemsTable.c.Id == FacesTable.c.MediaItemId)
            .join(MediaFileTable, MediaFileTable.c.Id == MediaItemsTable.c.MediaFileId)
            .where(MediaItemsTable.c.Duration.isnot(None), not_rejected())
            .order_by(FacesTable.c.MediaItemId, FacesTable.c.FrameNumber, FacesTable.c.Id)
        )
        videos: dict[int, tuple[Path, list[Any]]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                path = media_path(row.FilePath, row.FileName, row.PathKey)
                videos.setdefault(row.MediaItemId, (path, []))[1].append(row)
        return videos

    def save_tracks(self, face_ids: Sequence[int], track_ids: Sequence[int]) -> None:
        """One video's tracks, in one transaction: TrackId is the id of the track's first face."""
        if not len(face_ids):
            return
        with self._write() as conn:
            conn.execute(
                update(FacesTable).where(FacesTable.c.Id == bindparam("face_id")),
                [{"face_id": int(f), "TrackId": int(t), "ModifiedAt": utcnow()}
                 for f, t in zip(face_ids, track_ids, strict=True)],
            )  # fmt: skip
