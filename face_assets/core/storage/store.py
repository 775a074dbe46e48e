"""FaceStore: every read and write of the application tables, in batches, one item per transaction.

The class is assembled from one module per concern: media items and faces here, person state
(persons.py), locks (locks.py) and reports (reports.py); codecs.py and errors.py hold the values
and failures they share.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, and_, bindparam, func, insert, or_, select, update

from face_assets.core.batch import IdRange
from face_assets.core.storage.codecs import (
    EMBEDDING_DIM,
    IN_LIST_MAX,
    chunks,
    decode_embedding,
    encode_embedding,
    media_path,
    path_key,
    unstorable_path,
)
from face_assets.core.storage.connection import safe_url, unreachable_reason
from face_assets.core.storage.corrections import CorrectionsMixin
from face_assets.core.storage.engine import make_engine, missing_schema, upgrade_schema
from face_assets.core.storage.errors import (
    DatabaseUnavailable,
    LockHeld,
    SchemaError,
    is_connection_error,
    saving,
    unavailable,
)
from face_assets.core.storage.locks import LocksMixin
from face_assets.core.storage.media_files import FileFacts, MediaFilesMixin
from face_assets.core.storage.persons import FaceEmbeddings, PersonsMixin, tracking_person_sums
from face_assets.core.storage.reports import ReportsMixin
from face_assets.core.storage.schema import FacesTable, MediaFileTable, MediaItemsTable, utcnow
from face_assets.core.storage.terms import FILE_COLUMNS, in_range, not_rejected, pending
from face_assets.core.storage.tracks import TracksMixin
from face_assets.core.vision.types import DetectedFace

__all__ = [
    "EMBEDDING_DIM", "IN_LIST_MAX", "DatabaseUnavailable", "FaceEmbeddings", "FaceRecord", "FileFacts",
    "FaceStore", "LockHeld", "MediaItem", "SchemaError", "chunks", "decode_embedding",
    "encode_embedding", "is_connection_error", "media_path", "not_rejected", "path_key", "saving",
    "unavailable", "unstorable_path",
]  # fmt: skip

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MediaItem:
    id: int
    media_file_id: int
    path: Path


@dataclass(frozen=True)
class FaceRecord:
    id: int
    media_item_id: int
    path: Path
    box_xyxy: tuple[float, float, float, float]
    name: str | None = None  # thumbnail file name the legacy tools wrote, if any
    frame: int | None = None  # videos: the frame the face is in
    landmarks: tuple[tuple[float, float], ...] | None = None  # None: a legacy tool stored none


def _landmarks(value: str | None) -> tuple[tuple[float, float], ...] | None:
    """Five (x, y) points from the column's JSON, or None when it holds no such thing."""
    try:
        points = json.loads(value) if value else None
        return tuple((float(x), float(y)) for x, y in points) if points and len(points) == 5 else None
    except (ValueError, TypeError):
        return None


# Claims a pending item for its detection: a concurrent run that got there first makes it a no-op.
_CLAIM_ITEM = (
    update(MediaItemsTable)
    .where(MediaItemsTable.c.Id == bindparam("item_id"), pending())
    .values(IsFacesExtracted=True, FacesExtractedOn=bindparam("now"), FaceCount=bindparam("count"),
            DetectorName=bindparam("detector"), ImageWidth=bindparam("width"),
            ImageHeight=bindparam("height"), Duration=bindparam("duration"),
            FrameRate=bindparam("fps"), ExtractionError=None)
)  # fmt: skip
_INSERT_FACE = insert(FacesTable)


class FaceStore(MediaFilesMixin, PersonsMixin, CorrectionsMixin, LocksMixin, ReportsMixin, TracksMixin):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._takeovers = []
        self._fences = {}

    @classmethod
    def connect(cls, url: str) -> FaceStore:
        """A store on `url` whose database answered, whatever its schema; DatabaseUnavailable
        with one line saying why when it does not."""
        engine = make_engine(url)
        reason = unreachable_reason(engine)
        if reason is not None:
            engine.dispose()
            raise DatabaseUnavailable(reason)
        return cls(engine)

    @classmethod
    def from_url(cls, url: str, *, upgrade: bool | None = None) -> FaceStore:
        """A store on `url`. The schema is upgraded when `upgrade` is True, or when it is None
        and the database is the embedded SQLite default; a server database whose schema lacks
        something is refused with the command that fixes it. A database that cannot be reached
        raises DatabaseUnavailable with one line saying why."""
        store = cls.connect(url)
        if upgrade is None:
            upgrade = store.engine.dialect.name == "sqlite"
        if upgrade:
            store.upgrade()
        else:
            missing = missing_schema(store.engine)
            if missing:
                store.dispose()
                raise SchemaError(
                    f"database {safe_url(store.engine.url)} lacks "
                    f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}: "
                    "run `face-assets db init` to add them (existing rows are not touched)"
                )
        return store

    def upgrade(self) -> list[str]:
        """Adds what the schema lacks, then gives every person that has none its embedding sum
        (an upgrade from a release without them)."""
        changes = upgrade_schema(self.engine)
        self.person_means()
        return changes

    def dispose(self) -> None:
        self.engine.dispose()

    # media files and items ---------------------------------------------------------------

    def pending_media_items(self, limit: int | None = None, id_range: IdRange = None) -> list[MediaItem]:
        query = (
            select(
                MediaItemsTable.c.Id,
                MediaItemsTable.c.MediaFileId,
                *FILE_COLUMNS,
            )  # fmt: skip
            .join(MediaFileTable, MediaFileTable.c.Id == MediaItemsTable.c.MediaFileId)
            .where(pending(), *in_range(MediaItemsTable.c.Id, id_range))
            .order_by(MediaItemsTable.c.Id)
        )
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [MediaItem(r.Id, r.MediaFileId, media_path(r.FilePath, r.FileName, r.PathKey)) for r in rows]

    def save_detection(
        self,
        media_item_id: int,
        faces: Sequence[DetectedFace],
        detector: str,
        image_size: tuple[int, int],
        thumbnails: Sequence[tuple[str, float]] | None = None,
        video: tuple[float, float] | None = None,
        embeddings: tuple[NDArray[np.float32], str] | None = None,
    ) -> bool:
        """Writes an item's faces and marks it extracted, atomically; False if already done.

        `thumbnails`, face-aligned when the files are already written: (path relative to the
        thumbnail folder, sharpness), stored with the faces in the same transaction. `video`:
        (duration in seconds, frame rate) of a video. `embeddings`: (face-aligned vectors, the
        embedder's name) when the faces were embedded from the same decode."""
        now = utcnow()
        cut = list(thumbnails) if thumbnails is not None else [None] * len(faces)
        vectors, model = embeddings if embeddings is not None else ([None] * len(faces), None)
        with self._write() as conn:
            claimed = conn.execute(
                _CLAIM_ITEM,
                {"item_id": media_item_id, "now": now, "count": len(faces), "detector": detector,
                 "width": image_size[0], "height": image_size[1],
                 "duration": video[0] if video else None, "fps": video[1] if video else None},
            ).rowcount  # fmt: skip
            if claimed != 1:
                return False
            if faces:
                conn.execute(
                    _INSERT_FACE,
                    [
                        {
                            "MediaItemId": media_item_id,
                            "BoundingBox": json.dumps([round(v, 1) for v in face.box_xyxy]),
                            "DetectionScore": face.score,
                            "Landmarks": json.dumps([[round(x, 1), round(y, 1)] for x, y in face.landmarks]),
                            "IsUserVerified": False,
                            "CreatedAt": now,
                            "ModifiedAt": now,
                            "Name": Path(thumbnail[0]).name if thumbnail else None,
                            "ThumbnailPath": thumbnail[0] if thumbnail else None,
                            "Sharpness": thumbnail[1] if thumbnail else None,
                            "FrameNumber": face.frame,
                            "FrameTime": face.time_s,
                            "Embedding": encode_embedding(vector) if vector is not None else None,
                            "EmbeddingModel": model if vector is not None else None,
                        }
                        for face, thumbnail, vector in zip(faces, cut, vectors, strict=True)
                    ],
                )
        return True

    def save_extraction_error(self, media_item_id: int, message: str) -> None:
        """Marks an unreadable item processed, with the reason, so it is not retried forever."""
        with self._write() as conn:
            conn.execute(
                update(MediaItemsTable)
                .where(MediaItemsTable.c.Id == media_item_id)
                .values(IsFacesExtracted=True, FacesExtractedOn=utcnow(), FaceCount=0,
                        ExtractionError=message[:1000])
            )  # fmt: skip

    def save_read_failure(self, media_item_id: int, message: str) -> None:
        """Keeps an item pending with the reason it could not be read now (a missing file, an
        unmounted share, a permission): the next run tries it again. FacesExtractedOn holds the
        time of that attempt, so the sensor retries it after a while, not on every tick."""
        with self._write() as conn:
            conn.execute(
                update(MediaItemsTable)
                .where(MediaItemsTable.c.Id == media_item_id, pending())
                .values(FacesExtractedOn=utcnow(), ExtractionError=message[:1000])
            )

    def requeue_failed(self, id_range: IdRange = None) -> int:
        """Puts every item whose detection failed back in the queue (the files are fixed or back);
        returns how many."""
        with self._write() as conn:
            return int(
                conn.execute(
                    update(MediaItemsTable)
                    .where(
                        MediaItemsTable.c.ExtractionError.isnot(None),
                        *in_range(MediaItemsTable.c.Id, id_range),
                    )
                    .values(IsFacesExtracted=False, FacesExtractedOn=None, ExtractionError=None)
                ).rowcount
            )

    # faces --------------------------------------------------------------------------------

    def _faces_where(self, condition: Any) -> list[FaceRecord]:
        query = (
            select(
                FacesTable.c.Id,
                FacesTable.c.MediaItemId,
                FacesTable.c.BoundingBox,
                FacesTable.c.Name,
                FacesTable.c.FrameNumber,
                FacesTable.c.Landmarks,
                *FILE_COLUMNS,
            )  # fmt: skip
            .join(MediaItemsTable, MediaItemsTable.c.Id == FacesTable.c.MediaItemId)
            .join(MediaFileTable, MediaFileTable.c.Id == MediaItemsTable.c.MediaFileId)
            .where(condition)
            .order_by(FacesTable.c.MediaItemId, FacesTable.c.Id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            FaceRecord(
                r.Id,
                r.MediaItemId,
                media_path(r.FilePath, r.FileName, r.PathKey),
                tuple(float(v) for v in json.loads(r.BoundingBox)[:4]),  # type: ignore[arg-type]
                r.Name,
                r.FrameNumber,
                _landmarks(r.Landmarks),
            )  # fmt: skip
            for r in rows
            if r.BoundingBox
        ]

    def faces_without_thumbnail(self, id_range: IdRange = None) -> list[FaceRecord]:
        return self._faces_where(
            and_(
                FacesTable.c.ThumbnailPath.is_(None),
                not_rejected(),
                *in_range(FacesTable.c.MediaItemId, id_range),
            )
        )

    def faces_without_embedding(self, id_range: IdRange = None) -> list[FaceRecord]:
        return self._faces_where(
            and_(
                FacesTable.c.Embedding.is_(None),
                not_rejected(),
                *in_range(FacesTable.c.MediaItemId, id_range),
            )
        )

    def pending_media_item_ids(
        self,
        above: int = 0,
        up_to: int | None = None,
        limit: int = 10_000,
        unreadable_before: datetime | None = None,
    ) -> list[int]:
        """Ids of media items not yet through detection, in (above, up_to], oldest first.

        With `unreadable_before`, an item that could not be read is only among them when its
        last attempt is older than that."""
        query = select(MediaItemsTable.c.Id).where(pending(), MediaItemsTable.c.Id > above)
        if up_to is not None:
            query = query.where(MediaItemsTable.c.Id <= up_to)
        if unreadable_before is not None:
            query = query.where(
                or_(
                    MediaItemsTable.c.ExtractionError.is_(None),
                    MediaItemsTable.c.FacesExtractedOn.is_(None),
                    MediaItemsTable.c.FacesExtractedOn < unreadable_before,
                )
            )
        with self.engine.connect() as conn:
            return list(conn.execute(query.order_by(MediaItemsTable.c.Id).limit(limit)).scalars())

    def save_thumbnails(
        self, rows: Sequence[tuple[int, str, str]], sharpness: Sequence[float] | None = None
    ) -> None:
        """(face id, file name, path relative to the thumbnail folder), one transaction;
        `sharpness` of each thumbnail, row-aligned, when known."""
        if not rows:
            return
        sharp = list(sharpness) if sharpness is not None else [None] * len(rows)
        statement = (
            update(FacesTable)
            .where(FacesTable.c.Id == bindparam("face_id"))
            .values(
                # A thumbnail name the legacy tools wrote stays: their application reads it.
                Name=func.coalesce(FacesTable.c.Name, bindparam("name")),
                ThumbnailPath=bindparam("path"),
                Sharpness=bindparam("sharp"),
                ModifiedAt=bindparam("modified"),
            )
        )
        now = utcnow()
        with self._write() as conn:
            conn.execute(
                statement,
                [{"face_id": i, "name": n, "path": p, "sharp": s, "modified": now}
                 for (i, n, p), s in zip(rows, sharp, strict=True)],
            )  # fmt: skip

    def thumbnails_in_use(self, relpaths: Iterable[str]) -> set[str]:
        """Those of the thumbnail paths (relative to the thumbnail folder) that a face row names."""
        wanted = sorted(set(relpaths))
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), IN_LIST_MAX):
                part = wanted[start : start + IN_LIST_MAX]
                query = select(FacesTable.c.ThumbnailPath).where(FacesTable.c.ThumbnailPath.in_(part))
                found |= set(conn.execute(query).scalars())
        return found

    def other_embedding_model(self, model: str) -> str | None:
        """A model other than `model` that some face's embedding comes from, or None. Written
        as two ranges (not `<>`) so that every database answers from the index."""
        column = FacesTable.c.EmbeddingModel
        query = (
            select(column)
            .where(or_(column < model, column > model), FacesTable.c.Embedding.isnot(None))
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def any_embedding_model(self) -> str | None:
        """The model of some embedded face (the first in the index), or None."""
        column = FacesTable.c.EmbeddingModel
        query = select(column).where(column.isnot(None), FacesTable.c.Embedding.isnot(None))
        with self.engine.connect() as conn:
            return conn.execute(query.order_by(column).limit(1)).scalar()

    def faces_of_other_models(self, model: str, limit: int) -> list[tuple[int, str, Any, Any]]:
        """Up to `limit` embedded faces whose embedding is another model's than `model`: (id,
        its model, Embedding, BaseEmbedding), in the order of their ids."""
        column = FacesTable.c.EmbeddingModel
        query = (
            select(FacesTable.c.Id, column, FacesTable.c.Embedding, FacesTable.c.BaseEmbedding)
            .where(or_(column < model, column > model), FacesTable.c.Embedding.isnot(None))
            .order_by(FacesTable.c.Id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(r.Id, r.EmbeddingModel, r.Embedding, r.BaseEmbedding) for r in conn.execute(query)]

    def forget_embeddings(self, face_ids: Sequence[int]) -> None:
        """The faces lose their embeddings (the embedding step makes them again from their
        photos); the persons' sums follow, in the same transaction."""
        with self._write() as conn, tracking_person_sums(conn, face_ids):
            for part in chunks(face_ids):
                conn.execute(
                    update(FacesTable)
                    .where(FacesTable.c.Id.in_(part))
                    .values(Embedding=None, BaseEmbedding=None, EmbeddingModel=None, ModifiedAt=utcnow())
                )

    def save_embeddings(
        self,
        face_ids: Sequence[int],
        vectors: NDArray[np.float32],
        model: str,
        base_vectors: NDArray[np.float32] | None = None,
    ) -> None:
        """The faces' embeddings by `model`, and with a tuned model its base model's
        (`base_vectors`); the persons' sums follow, in the same transaction."""
        if not len(face_ids):
            return
        bases: list[Any] = [None] * len(face_ids)
        if base_vectors is not None:
            bases = [encode_embedding(v) for v in base_vectors]
        # A face another application already gave a person joins that person's sum.
        with self._write() as conn, tracking_person_sums(conn, face_ids):
            conn.execute(
                update(FacesTable).where(FacesTable.c.Id == bindparam("face_id")),
                [{"face_id": int(i), "Embedding": encode_embedding(v), "BaseEmbedding": b,
                  "EmbeddingModel": model, "ModifiedAt": utcnow()}
                 for i, v, b in zip(face_ids, vectors, bases, strict=True)],
            )  # fmt: skip
