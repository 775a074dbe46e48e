"""FaceStore: every read and write of the application tables, in batches, one item per transaction."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    and_,
    bindparam,
    delete,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from face_assets.core.batch import IdRange
from face_assets.core.storage.connection import driver_reason, safe_url, unreachable_reason
from face_assets.core.storage.engine import make_engine, missing_schema, upgrade_schema
from face_assets.core.storage.schema import (
    FacesTable,
    LocksTable,
    MediaFileTable,
    MediaItemsTable,
    PersonsTable,
    utcnow,
)
from face_assets.core.vision.types import DetectedFace

logger = logging.getLogger(__name__)

EMBEDDING_DIM = 512
# Ids per IN (...) list: SQL Server takes at most 2100 parameters in one statement.
IN_LIST_MAX = 500


def chunks(ids: Sequence[int], size: int = IN_LIST_MAX) -> Iterator[list[int]]:
    """Ids in slices short enough for one IN (...) list on every dialect."""
    ids = [int(i) for i in ids]
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def unstorable_path(path: Path) -> str | None:
    """Why MediaFile cannot hold this file's path (the servers refuse what does not fit the
    legacy column sizes; SQLite would store it silently), or None."""
    absolute = path.resolve()
    for value, column in (
        (str(absolute.parent), MediaFileTable.c.FilePath),
        (absolute.name, MediaFileTable.c.FileName),
    ):
        limit = column.type.length  # type: ignore[attr-defined]
        if len(value) > limit:
            return f"{column.name} would be {len(value)} characters, the table holds {limit}"
    return None


def path_key(path: Path) -> str:
    """The identity of a file: sha256 of its absolute, resolved path."""
    return hashlib.sha256(str(path.resolve()).encode("utf-8")).hexdigest()


def encode_embedding(vector: NDArray[np.float32]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def decode_embedding(value: bytes | str | None) -> NDArray[np.float32] | None:
    """Raw float32 bytes (the product's format) or JSON text (written by legacy tools)."""
    if value is None:
        return None
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    # Raw float32 bytes may start with "[" by chance; JSON text is ASCII from "[" to "]".
    if raw[:1] == b"[" and raw.rstrip()[-1:] == b"]" and raw.isascii():
        return np.asarray(json.loads(raw.decode("ascii")), dtype=np.float32)
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


# What media_path needs to rebuild a file's path from a MediaFile row.
_FILE_COLUMNS = (MediaFileTable.c.FilePath, MediaFileTable.c.FileName, MediaFileTable.c.PathKey)


def _in_range(column: Any, id_range: IdRange) -> list[Any]:
    """WHERE terms limiting a media item id column to a batch; none for the whole library."""
    if id_range is None:
        return []
    return [column >= id_range[0], column <= id_range[1]]


def not_rejected() -> Any:
    """Faces a user has not rejected (legacy rows hold NULL)."""
    return or_(FacesTable.c.IsRejected.is_(None), FacesTable.c.IsRejected == false())


def _pending() -> Any:
    """Media items not yet through detection (legacy rows may hold NULL)."""
    return or_(MediaItemsTable.c.IsFacesExtracted.is_(None), MediaItemsTable.c.IsFacesExtracted == false())


def media_path(file_path: str, file_name: str, path_key: str | None = None) -> Path:
    """Rows this product wrote (they carry a PathKey) keep the folder in FilePath; legacy rows
    keep either the folder or the full path, and both are read."""
    if path_key is None and PurePath(file_path).name == file_name:
        return Path(file_path)
    return Path(file_path) / file_name


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


@dataclass(frozen=True)
class FaceEmbeddings:
    """All embedded faces: ids, owners and a (n_faces, 512) matrix, row-aligned."""

    face_ids: NDArray[np.int64]
    media_item_ids: NDArray[np.int64]
    person_ids: NDArray[np.int64]  # -1 = unassigned
    clustered: NDArray[np.bool_]  # already seen by a clustering pass
    user_placed: NDArray[np.bool_]  # put there by a user correction: never moved automatically
    vectors: NDArray[np.float32]


def _insert_id(conn: Connection, statement: Insert) -> int:
    """Executes one INSERT and returns the new row's identity."""
    key = conn.execute(statement).inserted_primary_key
    assert key is not None
    return int(key[0])


class LockHeld(RuntimeError):
    """Another process holds a lock this one needs; the message says who and since when."""


class SchemaError(RuntimeError):
    """The application tables lack columns or tables this product needs."""


class DatabaseUnavailable(RuntimeError):
    """The database server cannot be reached or went away; the message is one line."""


def is_connection_error(error: DBAPIError) -> bool:
    """A lost or refused connection, as opposed to a fault in a statement."""
    return bool(error.connection_invalidated) or isinstance(error, OperationalError | InterfaceError)


def unavailable(error: BaseException) -> DatabaseUnavailable | None:
    """`error` as DatabaseUnavailable when it says the database cannot be reached or went away
    (its one line, not SQLAlchemy's statement dump); None for any other error."""
    if isinstance(error, DatabaseUnavailable):
        return error
    if isinstance(error, DBAPIError) and is_connection_error(error):
        return DatabaseUnavailable(f"the database went away ({driver_reason(error)}); rerun when it is back")
    return None


@contextmanager
def saving(what: str) -> Iterator[None]:
    """Turns a connection lost while saving `what` into one logged line and DatabaseUnavailable.
    The transaction was rolled back (or died with the server): nothing of `what` is written."""
    try:
        yield
    except DBAPIError as error:
        if not is_connection_error(error):
            raise
        message = (
            f"{what} was not saved: the database is unavailable ({driver_reason(error)}); "
            "rerun when it is back"
        )
        logger.error("%s", message)
        raise DatabaseUnavailable(message) from None


class FaceStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
        return upgrade_schema(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    # media files and items ---------------------------------------------------------------

    def register_media_file(self, path: Path, media_format: str, size: int) -> int | None:
        """Adds a MediaFile and its MediaItems row; None when the file is already registered."""
        absolute = path.resolve()
        key = path_key(absolute)
        # Legacy rows have no PathKey: they are found by folder + name, or by the full path.
        legacy = and_(
            MediaFileTable.c.PathKey.is_(None),
            or_(
                and_(
                    MediaFileTable.c.FilePath == str(absolute.parent),
                    MediaFileTable.c.FileName == absolute.name,
                ),
                MediaFileTable.c.FilePath == str(absolute),
            ),
        )
        with self.engine.begin() as conn:
            known = select(MediaFileTable.c.Id).where(or_(MediaFileTable.c.PathKey == key, legacy))
            if conn.execute(known).first():
                return None
            try:
                with conn.begin_nested():
                    file_id = _insert_id(
                        conn,
                        insert(MediaFileTable).values(
                            FilePath=str(absolute.parent),
                            FileName=absolute.name,
                            Extensions=absolute.suffix.lstrip(".").lower()[:10] or None,
                            PathKey=key,
                            MediaFormat=media_format,
                            FileSize=size,
                        ),
                    )
            except IntegrityError:
                return None  # registered by a concurrent run a moment ago
            return _insert_id(
                conn,
                insert(MediaItemsTable).values(
                    MediaFileId=file_id, Name=absolute.name[:255], IsFacesExtracted=False
                ),
            )

    def known_path_keys(self) -> set[str]:
        """PathKeys of every registered file: a folder scan skips these without opening them."""
        with self.engine.connect() as conn:
            query = select(MediaFileTable.c.PathKey).where(MediaFileTable.c.PathKey.isnot(None))
            return set(conn.execute(query).scalars())

    def pending_media_items(self, limit: int | None = None, id_range: IdRange = None) -> list[MediaItem]:
        query = (
            select(
                MediaItemsTable.c.Id,
                MediaItemsTable.c.MediaFileId,
                *_FILE_COLUMNS,
            )  # fmt: skip
            .join(MediaFileTable, MediaFileTable.c.Id == MediaItemsTable.c.MediaFileId)
            .where(_pending(), *_in_range(MediaItemsTable.c.Id, id_range))
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
    ) -> bool:
        """Writes an item's faces and marks it extracted, atomically; False if already done."""
        now = utcnow()
        with self.engine.begin() as conn:
            # Claim the item first: a concurrent run that got there first makes this a no-op.
            claimed = conn.execute(
                update(MediaItemsTable)
                .where(MediaItemsTable.c.Id == media_item_id)
                .where(_pending())  # noqa: E712
                .values(IsFacesExtracted=True, FacesExtractedOn=now, FaceCount=len(faces),
                        DetectorName=detector, ImageWidth=image_size[0],
                        ImageHeight=image_size[1], ExtractionError=None)
            ).rowcount  # fmt: skip
            if claimed != 1:
                return False
            if faces:
                conn.execute(
                    insert(FacesTable),
                    [
                        {
                            "MediaItemId": media_item_id,
                            "BoundingBox": json.dumps([round(v, 1) for v in face.box_xyxy]),
                            "DetectionScore": face.score,
                            "Landmarks": json.dumps([[round(x, 1), round(y, 1)] for x, y in face.landmarks]),
                            "IsUserVerified": False,
                            "CreatedAt": now,
                            "ModifiedAt": now,
                        }
                        for face in faces
                    ],
                )
        return True

    def save_extraction_error(self, media_item_id: int, message: str) -> None:
        """Marks an unreadable item processed, with the reason, so it is not retried forever."""
        with self.engine.begin() as conn:
            conn.execute(
                update(MediaItemsTable)
                .where(MediaItemsTable.c.Id == media_item_id)
                .values(IsFacesExtracted=True, FacesExtractedOn=utcnow(), FaceCount=0,
                        ExtractionError=message[:1000])
            )  # fmt: skip

    # faces --------------------------------------------------------------------------------

    def _faces_where(self, condition: Any) -> list[FaceRecord]:
        query = (
            select(
                FacesTable.c.Id,
                FacesTable.c.MediaItemId,
                FacesTable.c.BoundingBox,
                FacesTable.c.Name,
                *_FILE_COLUMNS,
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
            )  # fmt: skip
            for r in rows
            if r.BoundingBox
        ]

    def faces_without_thumbnail(self, id_range: IdRange = None) -> list[FaceRecord]:
        return self._faces_where(
            and_(
                FacesTable.c.ThumbnailPath.is_(None),
                not_rejected(),
                *_in_range(FacesTable.c.MediaItemId, id_range),
            )
        )

    def faces_without_embedding(self, id_range: IdRange = None) -> list[FaceRecord]:
        return self._faces_where(
            and_(
                FacesTable.c.Embedding.is_(None),
                not_rejected(),
                *_in_range(FacesTable.c.MediaItemId, id_range),
            )
        )

    def pending_media_item_ids(
        self, above: int = 0, up_to: int | None = None, limit: int = 10_000
    ) -> list[int]:
        """Ids of media items not yet through detection, in (above, up_to], oldest first."""
        query = select(MediaItemsTable.c.Id).where(_pending(), MediaItemsTable.c.Id > above)
        if up_to is not None:
            query = query.where(MediaItemsTable.c.Id <= up_to)
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
        with self.engine.begin() as conn:
            conn.execute(
                statement,
                [{"face_id": i, "name": n, "path": p, "sharp": s, "modified": now}
                 for (i, n, p), s in zip(rows, sharp, strict=True)],
            )  # fmt: skip

    def save_embeddings(self, face_ids: Sequence[int], vectors: NDArray[np.float32], model: str) -> None:
        if not len(face_ids):
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(FacesTable).where(FacesTable.c.Id == bindparam("face_id")),
                [{"face_id": int(i), "Embedding": encode_embedding(v), "EmbeddingModel": model,
                  "ModifiedAt": utcnow()} for i, v in zip(face_ids, vectors, strict=True)],
            )  # fmt: skip

    def face_embeddings(self) -> FaceEmbeddings:
        query = (
            select(
                FacesTable.c.Id,
                FacesTable.c.MediaItemId,
                FacesTable.c.PersonId,
                FacesTable.c.PersonAssignedBy,
                FacesTable.c.IsUserVerified,
                FacesTable.c.Embedding,
            )  # fmt: skip
            .where(FacesTable.c.Embedding.isnot(None), not_rejected())
            .order_by(FacesTable.c.Id)
        )
        ids, items, persons, clustered, placed, vectors = [], [], [], [], [], []
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                try:
                    vector = decode_embedding(row.Embedding)
                except ValueError:  # not float32 bytes, not JSON: the embedding check names it
                    vector = None
                if vector is None or vector.shape != (EMBEDDING_DIM,):
                    logger.warning("face %s has no usable 512-d embedding; skipped", row.Id)
                    continue
                ids.append(row.Id)
                items.append(row.MediaItemId)
                persons.append(-1 if row.PersonId is None else row.PersonId)
                clustered.append(row.PersonAssignedBy is not None)
                # A face the legacy tools marked verified is the user's decision as well.
                legacy_verified = row.PersonAssignedBy is None and bool(row.IsUserVerified) and row.PersonId
                placed.append(row.PersonAssignedBy == "user" or bool(legacy_verified))
                vectors.append(vector)
        matrix = np.vstack(vectors) if vectors else np.zeros((0, EMBEDDING_DIM), np.float32)
        return FaceEmbeddings(
            np.asarray(ids, dtype=np.int64), np.asarray(items, dtype=np.int64),
            np.asarray(persons, dtype=np.int64), np.asarray(clustered, dtype=bool),
            np.asarray(placed, dtype=bool),
            matrix.astype(np.float32),
        )  # fmt: skip

    # persons ------------------------------------------------------------------------------

    def apply_person_changes(
        self,
        new_persons: Sequence[Sequence[int]],
        matches: Sequence[tuple[int, int, float]],
        noise: Iterable[int],
        regrouped: Sequence[tuple[int, int]] = (),
    ) -> list[int]:
        """One transaction: create a person per face-id group; assign matched faces to existing
        persons (face id, person id, similarity); put regrouped faces (face id, person id) into
        existing persons as clustered; unassign noise faces and mark them seen by clustering;
        delete automatic persons left without a face. Returns the new person ids."""
        now = utcnow()
        created: list[int] = []
        with self.engine.begin() as conn:
            for face_ids in new_persons:
                person_id = _insert_id(
                    conn, insert(PersonsTable).values(Type="cluster", CreatedAt=now, ModifiedAt=now)
                )
                # Named after its own id, so names never collide across runs.
                conn.execute(
                    update(PersonsTable)
                    .where(PersonsTable.c.Id == person_id)
                    .values(Name=f"Person {person_id}")
                )
                regrouped = [*regrouped, *((int(f), person_id) for f in face_ids)]
                created.append(person_id)
            if regrouped:
                conn.execute(
                    update(FacesTable).where(FacesTable.c.Id == bindparam("face_id")),
                    [{"face_id": f, "PersonId": p, "PersonSimilarity": None,
                      "PersonAssignedBy": "cluster", "ModifiedAt": now} for f, p in regrouped],
                )  # fmt: skip
            if matches:
                conn.execute(
                    update(FacesTable).where(FacesTable.c.Id == bindparam("face_id")),
                    [{"face_id": f, "PersonId": p, "PersonSimilarity": s,
                      "PersonAssignedBy": "match", "ModifiedAt": now} for f, p, s in matches],
                )  # fmt: skip
            for part in chunks(list(noise)):
                conn.execute(
                    update(FacesTable)
                    .where(FacesTable.c.Id.in_(part))
                    .values(PersonId=None, PersonAssignedBy="noise")
                )
            # Only persons this product made and nobody named: other applications' persons stay.
            has_faces = exists().where(FacesTable.c.PersonId == PersonsTable.c.Id)
            conn.execute(
                delete(PersonsTable).where(
                    PersonsTable.c.Type == "cluster",
                    or_(PersonsTable.c.IsUserNamed.is_(None), PersonsTable.c.IsUserNamed == false()),
                    ~has_faces,
                )
            )
        return created

    @contextmanager
    def lock(
        self, name: str, owner: str, wait_seconds: float = 0.0, stale_after_s: float = 6 * 3600
    ) -> Iterator[None]:
        """Holds the named lock for the block; refuses (LockHeld) if another owner holds it
        for longer than `wait_seconds`. A lock older than `stale_after_s` (its holder died)
        is taken over."""
        deadline = time.monotonic() + wait_seconds
        while not self._try_lock(name, owner, stale_after_s):
            holder = self._lock_holder(name)
            if time.monotonic() >= deadline:
                raise LockHeld(f"{name} is running elsewhere ({holder}); try again when it has finished")
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
        try:
            yield
        finally:
            with self.engine.begin() as conn:
                conn.execute(delete(LocksTable).where(LocksTable.c.Name == name, LocksTable.c.Owner == owner))

    def _try_lock(self, name: str, owner: str, stale_after_s: float) -> bool:
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(LocksTable).values(Name=name, Owner=owner[:255], AcquiredAt=now))
            return True
        except IntegrityError:
            pass
        with self.engine.begin() as conn:
            row = conn.execute(select(LocksTable).where(LocksTable.c.Name == name)).first()
            if row is None or row.AcquiredAt > now - timedelta(seconds=stale_after_s):
                return False
            taken = conn.execute(
                update(LocksTable)
                .where(LocksTable.c.Name == name, LocksTable.c.AcquiredAt == row.AcquiredAt)
                .values(Owner=owner[:255], AcquiredAt=now)
            ).rowcount
        if taken == 1:
            logger.warning("took over the stale lock %s of %s (since %s)", name, row.Owner, row.AcquiredAt)
        return taken == 1

    def _lock_holder(self, name: str) -> str:
        with self.engine.connect() as conn:
            row = conn.execute(select(LocksTable).where(LocksTable.c.Name == name)).first()
        return f"held by {row.Owner} since {row.AcquiredAt:%Y-%m-%d %H:%M:%S} UTC" if row else "just released"

    # reports ------------------------------------------------------------------------------

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
                        _pending())  # noqa: E712
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

    def half_processed_media_items(self, limit: int = 20) -> list[int]:
        """Media items that have faces but are not marked processed (should never happen)."""
        has_faces = exists().where(FacesTable.c.MediaItemId == MediaItemsTable.c.Id)
        query = select(MediaItemsTable.c.Id).where(_pending(), has_faces).order_by(MediaItemsTable.c.Id)
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

    def embedding_problems(self, limit: int = 20, tolerance: float = 1e-3) -> tuple[int, list[str]]:
        """(embeddings checked, problems): each must be 512 finite float32 of unit norm."""
        checked, problems = 0, []
        query = select(FacesTable.c.Id, FacesTable.c.Embedding).where(FacesTable.c.Embedding.isnot(None))
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=2000).execute(query):
                checked += 1
                try:
                    vector = decode_embedding(row.Embedding)
                except ValueError as error:
                    problems.append(f"face {row.Id}: unreadable embedding ({error})")
                    continue
                if vector is None or vector.shape != (EMBEDDING_DIM,):
                    shape = None if vector is None else vector.shape
                    problems.append(f"face {row.Id}: shape {shape}, expected ({EMBEDDING_DIM},)")
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
        """Every face grouped by media item: id, box, person; for evaluation and reports."""
        query = select(
            FacesTable.c.Id, FacesTable.c.MediaItemId, FacesTable.c.BoundingBox,
            FacesTable.c.PersonId,
        ).order_by(FacesTable.c.Id)  # fmt: skip
        grouped: dict[int, list[dict[str, Any]]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query).mappings():
                grouped.setdefault(row["MediaItemId"], []).append(
                    {"id": row["Id"], "box_xyxy": json.loads(row["BoundingBox"] or "[0,0,0,0]"),
                     "person_id": row["PersonId"]}
                )  # fmt: skip
        return grouped

    def media_item_sizes(self) -> dict[int, tuple[int, int]]:
        """(width, height) of every detected media item, after EXIF orientation."""
        query = select(MediaItemsTable.c.Id, MediaItemsTable.c.ImageWidth, MediaItemsTable.c.ImageHeight)
        with self.engine.connect() as conn:
            return {r.Id: (r.ImageWidth, r.ImageHeight) for r in conn.execute(query) if r.ImageWidth}

    def media_items_by_path(self) -> dict[Path, int]:
        query = select(MediaItemsTable.c.Id, *_FILE_COLUMNS).join(
            MediaFileTable, MediaFileTable.c.Id == MediaItemsTable.c.MediaFileId
        )
        with self.engine.connect() as conn:
            return {media_path(r.FilePath, r.FileName, r.PathKey): r.Id for r in conn.execute(query)}
