"""Read-only reports: counts, person summaries and the invariants the asset checks guard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, exists, func, select

from face_assets.core.batch import IdRange
from face_assets.core.storage.codecs import decode_embedding, embedding_dim, media_path
from face_assets.core.storage.schema import FacesTable, MediaFileTable, MediaItemsTable, PersonsTable
from face_assets.core.storage.terms import FILE_COLUMNS, in_range, not_rejected, pending


class ReportsMixin:
    engine: Engine

    def person_summary(self) -> list[dict[str, Any]]:
        """Persons with their face counts, largest first."""
        query = (
            select(PersonsTable.c.Id, PersonsTable.c.Name, func.count(FacesTable.c.Id).label("faces"))
            .join(FacesTable, FacesTable.c.PersonId == PersonsTable.c.Id)
            .group_by(PersonsTable.c.Id, PersonsTable.c.Name)
            .order_by(func.count(FacesTable.c.Id).desc(), PersonsTable.c.Id)
        )  # fmt: skip
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings().all()]

    def counts(self) -> dict[str, int]:
        """Row counts a user checks after a run."""
        with self.engine.connect() as conn:
            scalar = conn.execute
            return {
                "media_items": scalar(select(func.count()).select_from(MediaItemsTable)).scalar_one(),
                "media_items_pending": scalar(
                    select(func.count()).select_from(MediaItemsTable).where(
                        pending())  # noqa: E712
                ).scalar_one(),
                "media_items_failed": scalar(
                    select(func.count()).select_from(MediaItemsTable)
                    .where(MediaItemsTable.c.ExtractionError.isnot(None))
                ).scalar_one(),
                "faces": scalar(select(func.count()).select_from(FacesTable)).scalar_one(),
                "faces_embedded": scalar(
                    select(func.count()).select_from(FacesTable)
                    .where(FacesTable.c.Embedding.isnot(None))
                ).scalar_one(),
                "faces_assigned": scalar(
                    select(func.count()).select_from(FacesTable)
                    .where(FacesTable.c.PersonId.isnot(None))
                ).scalar_one(),
                "persons": scalar(select(func.count()).select_from(PersonsTable)).scalar_one(),
            }  # fmt: skip

    # invariants a user relies on (asset checks) --------------------------------------------

    def half_processed_media_items(self, limit: int = 20, id_range: IdRange = None) -> list[int]:
        """Media items (of a batch, or all) that have faces but are not marked processed
        (should never happen)."""
        has_faces = exists().where(FacesTable.c.MediaItemId == MediaItemsTable.c.Id)
        query = (
            select(MediaItemsTable.c.Id)
            .where(pending(), has_faces, *in_range(MediaItemsTable.c.Id, id_range))
            .order_by(MediaItemsTable.c.Id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query.limit(limit)).scalars())

    def faces_with_missing_person(self, limit: int = 20) -> list[int]:
        """Faces whose PersonId names no Persons row."""
        query = (
            select(FacesTable.c.Id)
            .outerjoin(PersonsTable, PersonsTable.c.Id == FacesTable.c.PersonId)
            .where(FacesTable.c.PersonId.isnot(None), PersonsTable.c.Id.is_(None))
            .order_by(FacesTable.c.Id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query.limit(limit)).scalars())

    def embedding_problems(
        self, limit: int = 20, tolerance: float = 1e-3, id_range: IdRange = None
    ) -> tuple[int, list[str]]:
        """(embeddings checked, problems) of a batch's faces, or all: each must be finite
        float32 of unit norm, as many as its model gives (512 for FaceNet)."""
        checked, problems = 0, []
        query = select(FacesTable.c.Id, FacesTable.c.Embedding, FacesTable.c.EmbeddingModel).where(
            FacesTable.c.Embedding.isnot(None), *in_range(FacesTable.c.MediaItemId, id_range)
        )
        with self.engine.connect() as conn:
            for row in conn.execute(query.execution_options(yield_per=2000)):
                checked += 1
                try:
                    vector = decode_embedding(row.Embedding)
                except ValueError as error:
                    problems.append(f"face {row.Id}: unreadable embedding ({error})")
                    continue
                dim = embedding_dim(row.EmbeddingModel)
                if vector is None or vector.shape != (dim,):
                    shape = None if vector is None else vector.shape
                    problems.append(f"face {row.Id}: shape {shape}, expected ({dim},)")
                elif not np.isfinite(vector).all():
                    problems.append(f"face {row.Id}: NaN or infinite values")
                elif abs(float(np.linalg.norm(vector)) - 1.0) > tolerance:
                    problems.append(f"face {row.Id}: norm {np.linalg.norm(vector):.4f}, expected 1")
        return checked, problems[:limit]

    def extraction_errors(self) -> list[dict[str, Any]]:
        query = (
            select(MediaItemsTable.c.Id, MediaItemsTable.c.Name, MediaItemsTable.c.ExtractionError)
            .where(MediaItemsTable.c.ExtractionError.isnot(None))
            .order_by(MediaItemsTable.c.Id)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings().all()]

    def faces_of_media_items(self) -> dict[int, list[dict[str, Any]]]:
        """Every face grouped by media item: id, box, person, video track and frame; for
        evaluation and reports."""
        query = select(
            FacesTable.c.Id, FacesTable.c.MediaItemId, FacesTable.c.BoundingBox,
            FacesTable.c.PersonId, FacesTable.c.TrackId, FacesTable.c.FrameNumber,
        ).order_by(FacesTable.c.Id)  # fmt: skip
        grouped: dict[int, list[dict[str, Any]]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query).mappings():
                grouped.setdefault(row["MediaItemId"], []).append(
                    {"id": row["Id"], "box_xyxy": json.loads(row["BoundingBox"] or "[0,0,0,0]"),
                     "person_id": row["PersonId"], "track_id": row["TrackId"],
                     "frame": row["FrameNumber"]}
                )  # fmt: skip
        return grouped

    def embedding_models(self) -> list[str]:
        """The models the faces' embeddings come from (one, unless a legacy tool wrote others)."""
        query = (
            select(FacesTable.c.EmbeddingModel)
            .where(FacesTable.c.Embedding.isnot(None), FacesTable.c.EmbeddingModel.isnot(None))
            .distinct()
            .order_by(FacesTable.c.EmbeddingModel)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def media_item_sizes(self) -> dict[int, tuple[int, int]]:
        """(width, height) of every detected media item, after EXIF orientation."""
        query = select(MediaItemsTable.c.Id, MediaItemsTable.c.ImageWidth, MediaItemsTable.c.ImageHeight)
        with self.engine.connect() as conn:
            return {r.Id: (r.ImageWidth, r.ImageHeight) for r in conn.execute(query) if r.ImageWidth}

    def video_media_items(self) -> set[int]:
        """Ids of the media items detection found to be videos."""
        query = select(MediaItemsTable.c.Id).where(MediaItemsTable.c.Duration.isnot(None))
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def media_items_by_path(self) -> dict[Path, int]:
        query = select(MediaItemsTable.c.Id, *FILE_COLUMNS).join(
            MediaFileTable, MediaFileTable.c.Id == MediaItemsTable.c.MediaFileId
        )
        with self.engine.connect() as conn:
            return {media_path(r.FilePath, r.FileName, r.PathKey): r.Id for r in conn.execute(query)}

    def gallery_thumbnails(self) -> tuple[dict[int, str], list[str]]:
        """(person id -> portrait thumbnail path, thumbnail paths of unassigned faces)."""
        with self.engine.connect() as conn:
            portraits = {
                r.Id: r.ThumbnailPath
                for r in conn.execute(
                    select(PersonsTable.c.Id, FacesTable.c.ThumbnailPath).join(
                        FacesTable, FacesTable.c.Id == PersonsTable.c.PortraitFaceId
                    )
                )
            }
            unassigned = list(
                conn.execute(
                    select(FacesTable.c.ThumbnailPath)
                    .where(
                        FacesTable.c.PersonId.is_(None),
                        FacesTable.c.ThumbnailPath.isnot(None),
                        not_rejected(),
                    )
                    .order_by(FacesTable.c.Id)
                ).scalars()
            )
        return portraits, unassigned
