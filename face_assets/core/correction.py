"""A user's corrections to persons: rename, merge, split, move, reject, forget.

Each correction is one transaction under the persons lock, and is stored so that every later
automatic step respects it: faces a user placed carry PersonAssignedBy = "user" and are never
moved by matching or clustering; rejected faces are left out of every automatic step; a name a
user gave is kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, delete, func, insert, select, true, update

from face_assets.core.person import PERSONS_LOCK, default_owner
from face_assets.core.storage.schema import (
    FacesTable,
    MediaFileTable,
    MediaItemsTable,
    PersonsTable,
    utcnow,
)
from face_assets.core.storage.store import FaceStore, chunks, media_path

logger = logging.getLogger(__name__)

USER = "user"
# Corrections wait for a running clustering instead of failing.
LOCK_WAIT_S = 120.0


class CorrectionError(ValueError):
    """A correction that cannot apply (unknown id, name taken, ...); the message says why."""


@dataclass(frozen=True)
class PersonRow:
    id: int
    name: str
    faces: int
    user_named: bool


@dataclass(frozen=True)
class FaceRow:
    id: int
    media_item_id: int
    path: Path
    box_xyxy: list[float]
    thumbnail: str | None
    assigned_by: str | None


def list_persons(store: FaceStore) -> list[PersonRow]:
    count = func.count(FacesTable.c.Id)
    query = (
        select(PersonsTable.c.Id, PersonsTable.c.Name, PersonsTable.c.IsUserNamed, count.label("faces"))
        .outerjoin(FacesTable, FacesTable.c.PersonId == PersonsTable.c.Id)
        .group_by(PersonsTable.c.Id, PersonsTable.c.Name, PersonsTable.c.IsUserNamed)
        .order_by(count.desc(), PersonsTable.c.Id)
    )
    with store.engine.connect() as conn:
        return [PersonRow(r.Id, r.Name or "", r.faces, bool(r.IsUserNamed)) for r in conn.execute(query)]


def person_faces(store: FaceStore, person_id: int) -> list[FaceRow]:
    with store.engine.connect() as conn:
        _require_person(conn, person_id)
        query = (
            select(
                FacesTable.c.Id,
                FacesTable.c.MediaItemId,
                FacesTable.c.BoundingBox,
                FacesTable.c.ThumbnailPath,
                FacesTable.c.PersonAssignedBy,
                MediaFileTable.c.FilePath,
                MediaFileTable.c.FileName,
                MediaFileTable.c.PathKey,
            )  # fmt: skip
            .join(MediaItemsTable, MediaItemsTable.c.Id == FacesTable.c.MediaItemId)
            .join(MediaFileTable, MediaFileTable.c.Id == MediaItemsTable.c.MediaFileId)
            .where(FacesTable.c.PersonId == person_id)
            .order_by(FacesTable.c.Id)
        )
        return [
            FaceRow(
                r.Id,
                r.MediaItemId,
                media_path(r.FilePath, r.FileName, r.PathKey),
                json.loads(r.BoundingBox or "[]"),
                r.ThumbnailPath,
                r.PersonAssignedBy,
            )  # fmt: skip
            for r in conn.execute(query)
        ]


def _require_person(conn: Connection, person_id: int) -> None:
    if conn.execute(select(PersonsTable.c.Id).where(PersonsTable.c.Id == person_id)).first() is None:
        raise CorrectionError(f"no person with Id {person_id}")


def _require_faces(conn: Connection, face_ids: Sequence[int]) -> None:
    found: set[int] = set()
    for part in chunks(face_ids):
        found |= set(conn.execute(select(FacesTable.c.Id).where(FacesTable.c.Id.in_(part))).scalars())
    missing = sorted(set(face_ids) - found)
    if missing:
        raise CorrectionError(f"no face with Id {', '.join(map(str, missing))}")


def _place(conn: Connection, face_ids: Sequence[int], person_id: int | None) -> None:
    """Faces the user put somewhere: verified, and never moved by automatic steps."""
    for part in chunks(face_ids):
        conn.execute(
            update(FacesTable)
            .where(FacesTable.c.Id.in_(part))
            .values(PersonId=person_id, PersonAssignedBy=USER, IsUserVerified=True, ModifiedAt=utcnow())
        )


def rename_person(store: FaceStore, person_id: int, name: str) -> None:
    name = name.strip()
    if not name:
        raise CorrectionError("a person's name cannot be empty")
    with store.lock(PERSONS_LOCK, default_owner(), wait_seconds=LOCK_WAIT_S), store.engine.begin() as conn:
        _require_person(conn, person_id)
        clash = conn.execute(
            select(PersonsTable.c.Id).where(PersonsTable.c.Name == name, PersonsTable.c.Id != person_id)
        ).first()
        if clash:
            raise CorrectionError(f"person {clash.Id} is already named {name!r}; merge them instead")
        conn.execute(
            update(PersonsTable)
            .where(PersonsTable.c.Id == person_id)
            .values(Name=name[:255], IsUserNamed=True, ModifiedAt=utcnow())
        )


def merge_persons(store: FaceStore, target_id: int, source_ids: Sequence[int]) -> int:
    """Moves every face of the sources to the target and deletes the sources; returns faces moved.
    The target keeps its name, or takes a source's user-given name if it has none."""
    sources = [s for s in dict.fromkeys(source_ids) if s != target_id]
    if not sources:
        raise CorrectionError("merge needs at least one other person")
    with store.lock(PERSONS_LOCK, default_owner(), wait_seconds=LOCK_WAIT_S), store.engine.begin() as conn:
        for person_id in (target_id, *sources):
            _require_person(conn, person_id)
        target = conn.execute(select(PersonsTable).where(PersonsTable.c.Id == target_id)).mappings().one()
        if not target["IsUserNamed"]:
            named = conn.execute(
                select(PersonsTable.c.Name)
                .where(PersonsTable.c.Id.in_(sources), PersonsTable.c.IsUserNamed == true())
                .order_by(PersonsTable.c.Id)
            ).first()
            if named:
                conn.execute(
                    update(PersonsTable)
                    .where(PersonsTable.c.Id == target_id)
                    .values(Name=named.Name, IsUserNamed=True, ModifiedAt=utcnow())
                )
        moved = list(
            conn.execute(select(FacesTable.c.Id).where(FacesTable.c.PersonId.in_(sources))).scalars()
        )
        # Every face of the merged person is now the user's decision: a rebuild cannot undo it.
        kept = list(conn.execute(select(FacesTable.c.Id).where(FacesTable.c.PersonId == target_id)).scalars())
        _place(conn, moved + kept, target_id)
        conn.execute(delete(PersonsTable).where(PersonsTable.c.Id.in_(sources)))
    return len(moved)


def split_person(store: FaceStore, person_id: int, face_ids: Sequence[int]) -> int:
    """Moves the given faces of a person to a new person; returns the new person's Id."""
    with store.lock(PERSONS_LOCK, default_owner(), wait_seconds=LOCK_WAIT_S), store.engine.begin() as conn:
        _require_person(conn, person_id)
        _require_faces(conn, face_ids)
        owners = {
            owner
            for part in chunks(face_ids)
            for owner in conn.execute(
                select(FacesTable.c.PersonId).where(FacesTable.c.Id.in_(part))
            ).scalars()
        }
        if owners != {person_id}:
            raise CorrectionError(f"faces {list(face_ids)} do not all belong to person {person_id}")
        now = utcnow()
        new_id = int(
            conn.execute(
                insert(PersonsTable).values(Type="user", CreatedAt=now, ModifiedAt=now)
            ).inserted_primary_key[0]  # type: ignore[index]
        )
        conn.execute(update(PersonsTable).where(PersonsTable.c.Id == new_id).values(Name=f"Person {new_id}"))
        _place(conn, face_ids, new_id)
        # What stays with the person is now confirmed too: a later clustering must not undo the split.
        rest = conn.execute(select(FacesTable.c.Id).where(FacesTable.c.PersonId == person_id)).scalars()
        _place(conn, list(rest), person_id)
    return new_id


def move_face(store: FaceStore, face_id: int, person_id: int) -> None:
    with store.lock(PERSONS_LOCK, default_owner(), wait_seconds=LOCK_WAIT_S), store.engine.begin() as conn:
        _require_person(conn, person_id)
        _require_faces(conn, [face_id])
        _place(conn, [face_id], person_id)
        conn.execute(update(FacesTable).where(FacesTable.c.Id == face_id).values(IsRejected=False))


def reject_face(store: FaceStore, face_id: int) -> None:
    """Not a face, or a stranger: kept out of every person and every automatic step."""
    with store.lock(PERSONS_LOCK, default_owner(), wait_seconds=LOCK_WAIT_S), store.engine.begin() as conn:
        _require_faces(conn, [face_id])
        conn.execute(
            update(FacesTable)
            .where(FacesTable.c.Id == face_id)
            .values(PersonId=None, PersonAssignedBy=USER, IsRejected=True, ModifiedAt=utcnow())
        )


def forget_person(store: FaceStore, person_id: int, thumbnail_dir: Path) -> int:
    """Privacy: deletes the person, its faces' embeddings and thumbnail files, and the links.
    The faces stay as rejected boxes so that no automatic step recreates them; returns their count."""
    with store.lock(PERSONS_LOCK, default_owner(), wait_seconds=LOCK_WAIT_S), store.engine.begin() as conn:
        _require_person(conn, person_id)
        rows = conn.execute(
            select(FacesTable.c.Id, FacesTable.c.ThumbnailPath).where(FacesTable.c.PersonId == person_id)
        ).all()
        conn.execute(
            update(FacesTable)
            .where(FacesTable.c.PersonId == person_id)
            .values(
                PersonId=None,
                Embedding=None,
                EmbeddingModel=None,
                ThumbnailPath=None,
                Name=None,
                IsRejected=True,
                PersonAssignedBy=USER,
                ModifiedAt=utcnow(),
            )  # fmt: skip
        )
        conn.execute(delete(PersonsTable).where(PersonsTable.c.Id == person_id))
    # Files go once the rows no longer point at them; a crash in between leaves orphan files,
    # never rows pointing at missing files.
    for row in rows:
        if row.ThumbnailPath:
            (thumbnail_dir / row.ThumbnailPath).unlink(missing_ok=True)
    logger.info("forgot person %d: %d faces", person_id, len(rows))
    return len(rows)
