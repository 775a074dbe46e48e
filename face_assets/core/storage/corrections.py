"""A user's corrections as rows: each one transaction, the persons' sums kept in step.

Faces a user placed carry PersonAssignedBy = 'user' and IsUserVerified; rejected faces
IsRejected and the person they were taken from (RejectedFromPersonId); faces whose person was
forgotten PersonAssignedBy = 'forgotten'; a name a user gave IsUserNamed. The domain rules
(locking, file removal) live in core/correction.py.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, delete, func, insert, or_, select, true, update

from face_assets.core.storage.codecs import chunks, media_path
from face_assets.core.storage.errors import CorrectionError
from face_assets.core.storage.fencing import FencedWrites
from face_assets.core.storage.persons import tracking_person_sums
from face_assets.core.storage.schema import FacesTable, MediaFileTable, MediaItemsTable, PersonsTable, utcnow
from face_assets.core.storage.terms import insert_id

USER = "user"
# A face erased with its person: it never joins a person again, nor gets a thumbnail or embedding.
FORGOTTEN = "forgotten"


@dataclass(frozen=True)
class PersonRow:
    id: int
    name: str
    faces: int
    user_named: bool
    appearances: int = 0  # photo faces, and each video track once


@dataclass(frozen=True)
class FaceRow:
    id: int
    person_id: int
    media_item_id: int
    path: Path
    box_xyxy: list[float]
    thumbnail: str | None
    assigned_by: str | None
    time_s: float | None = None  # a video face's time in its video
    track_id: int | None = None


@dataclass(frozen=True)
class MovedFaces:
    """What a correction to faces did: the faces the user named and every face it moved with
    them, the other faces of their video tracks."""

    named: tuple[int, ...]
    face_ids: tuple[int, ...]  # every face moved, the named ones included
    tracks: int  # video tracks among them
    person_id: int | None  # the person they are in now; None: rejected

    @property
    def others(self) -> int:
        """Faces moved with the named ones because they share a video track."""
        return len(self.face_ids) - len(set(self.named))


@dataclass(frozen=True)
class ForgottenFaces:
    """The faces `forget_person` erased: the person's, and those rejected from it earlier."""

    face_ids: tuple[int, ...]
    rejected: int  # of them, faces rejected from the person before
    thumbnails: tuple[str, ...]  # their thumbnail files, relative to the thumbnail folder


def name_key(name: str) -> str:
    """A name as names are compared: regardless of case and of how an accent is encoded
    (Unicode canonical caseless match), so that "Zoë" and "zoë" are one name."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


# Automatic names are "Person <its Id>"; a user's name of that form would take a later person's.
_AUTOMATIC_NAME = re.compile(r"person (\d+)")


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


def _with_tracks(conn: Connection, face_ids: Sequence[int]) -> tuple[list[int], int]:
    """The faces and every face of the video tracks they are in, and the number of those tracks:
    a correction to one face of a track is a correction to the face it follows across frames."""
    tracks: set[int] = set()
    for part in chunks(face_ids):
        query = select(FacesTable.c.TrackId).where(
            FacesTable.c.Id.in_(part), FacesTable.c.TrackId.isnot(None)
        )
        tracks |= set(conn.execute(query).scalars())
    members = set(face_ids)
    for part in chunks(sorted(tracks)):
        members |= set(conn.execute(select(FacesTable.c.Id).where(FacesTable.c.TrackId.in_(part))).scalars())
    return sorted(members), len(tracks)


def _forgotten() -> Any:
    """Faces erased by forget_person. Before the marker it left them rejected without embedding
    or thumbnail, which nothing else does: a face gets its thumbnail in the run that detects it,
    before a user can see it, let alone reject it."""
    return or_(
        FacesTable.c.PersonAssignedBy == FORGOTTEN,
        and_(
            FacesTable.c.IsRejected == true(),
            FacesTable.c.PersonAssignedBy == USER,
            FacesTable.c.Embedding.is_(None),
            FacesTable.c.ThumbnailPath.is_(None),
        ),
    )


def _refuse_forgotten(conn: Connection, face_ids: Sequence[int], named: int, what: str) -> None:
    """A forgotten face stays erased: moving it would have its thumbnail and embedding made again
    from the photo, and count it in a person whose embedding sum it is not in."""
    for part in chunks(face_ids):
        query = select(FacesTable.c.Id).where(FacesTable.c.Id.in_(part), _forgotten())
        found = conn.execute(query.order_by(FacesTable.c.Id)).first()
        if found is None:
            continue
        which = f"face {named}"
        if found.Id != named:
            which = f"face {found.Id}, of the video track of face {named},"
        raise CorrectionError(
            f"{which} was forgotten with its person (embedding and thumbnail erased): it cannot be {what}"
        )


def _same_photo_face(conn: Connection, face_ids: Sequence[int], person_id: int) -> Any:
    """A face of `person_id`, not among `face_ids`, in the same photo (or the same video frame)
    as one of them, or None."""
    mine, other = FacesTable.alias("MovedFace"), FacesTable.c
    moving = set(face_ids)
    same_frame = or_(
        and_(mine.c.FrameNumber.is_(None), other.FrameNumber.is_(None)),
        mine.c.FrameNumber == other.FrameNumber,
    )
    for part in chunks(face_ids):
        query = (
            select(other.Id, other.MediaItemId, mine.c.Id.label("Mine"))
            .join(mine, and_(mine.c.MediaItemId == other.MediaItemId, same_frame))
            .where(mine.c.Id.in_(part), other.PersonId == person_id)
        )
        # The faces moved together are left out here, not in SQL: a track may hold thousands.
        for found in conn.execute(query):
            if found.Id not in moving:
                return found
    return None


def _faces_of(conn: Connection, person_ids: Sequence[int]) -> list[int]:
    return [
        f
        for part in chunks(person_ids)
        for f in conn.execute(select(FacesTable.c.Id).where(FacesTable.c.PersonId.in_(part))).scalars()
    ]


def _place(conn: Connection, face_ids: Sequence[int], person_id: int | None) -> None:
    """Faces the user put somewhere: verified, and never moved by automatic steps."""
    for part in chunks(face_ids):
        conn.execute(
            update(FacesTable)
            .where(FacesTable.c.Id.in_(part))
            .values(PersonId=person_id, PersonAssignedBy=USER, IsUserVerified=True, ModifiedAt=utcnow())
        )


@dataclass(frozen=True)
class LabelledFace:
    """A face a user said something about: placed in a person (`person_id`, its identity) or
    rejected from one (`rejected`: a negative, no one's positive)."""

    id: int
    person_id: int | None
    rejected: bool
    embedding: bytes | str
    model: str | None


class CorrectionsMixin(FencedWrites):
    engine: Engine

    def labelled_faces(self) -> list[LabelledFace]:
        """Faces of persons a user named, faces a user moved or split into a person, and faces
        a user rejected: what the user's corrections teach (fine-tuning)."""
        query = (
            select(
                FacesTable.c.Id,
                FacesTable.c.PersonId,
                FacesTable.c.IsRejected,
                FacesTable.c.Embedding,
                FacesTable.c.EmbeddingModel,
            )  # fmt: skip
            .outerjoin(PersonsTable, PersonsTable.c.Id == FacesTable.c.PersonId)
            .where(
                FacesTable.c.Embedding.isnot(None),
                or_(
                    FacesTable.c.IsRejected == true(),
                    and_(
                        FacesTable.c.PersonId.isnot(None),
                        or_(PersonsTable.c.IsUserNamed == true(), FacesTable.c.PersonAssignedBy == USER),
                    ),
                ),
            )
            .order_by(FacesTable.c.Id)
        )
        with self.engine.connect() as conn:
            return [
                LabelledFace(
                    r.Id,
                    None if r.IsRejected else r.PersonId,
                    bool(r.IsRejected),
                    r.Embedding,
                    r.EmbeddingModel,
                )  # fmt: skip
                for r in conn.execute(query.execution_options(yield_per=5000))
            ]

    def list_persons(self) -> list[PersonRow]:
        """Every person with its face count, largest first."""
        count = func.count(FacesTable.c.Id)
        # A track's faces count once: its id is its first face's, never another face's negated id.
        sighting = case((FacesTable.c.TrackId.isnot(None), FacesTable.c.TrackId), else_=-FacesTable.c.Id)
        appearances = func.count(sighting.distinct())
        query = (
            select(
                PersonsTable.c.Id,
                PersonsTable.c.Name,
                PersonsTable.c.IsUserNamed,
                count.label("faces"),
                appearances.label("appearances"),
            )  # fmt: skip
            .outerjoin(FacesTable, FacesTable.c.PersonId == PersonsTable.c.Id)
            .group_by(PersonsTable.c.Id, PersonsTable.c.Name, PersonsTable.c.IsUserNamed)
            .order_by(count.desc(), PersonsTable.c.Id)
        )
        with self.engine.connect() as conn:
            return [
                PersonRow(r.Id, r.Name or "", r.faces, bool(r.IsUserNamed), r.appearances)
                for r in conn.execute(query)
            ]

    def faces_by_person(self, person_id: int | None = None) -> dict[int, list[FaceRow]]:
        """The faces of one person (an unknown Id is an error), or of every person, in one query."""
        query = (
            select(
                FacesTable.c.Id,
                FacesTable.c.PersonId,
                FacesTable.c.MediaItemId,
                FacesTable.c.BoundingBox,
                FacesTable.c.ThumbnailPath,
                FacesTable.c.PersonAssignedBy,
                FacesTable.c.FrameTime,
                FacesTable.c.TrackId,
                MediaFileTable.c.FilePath,
                MediaFileTable.c.FileName,
                MediaFileTable.c.PathKey,
            )  # fmt: skip
            .join(MediaItemsTable, MediaItemsTable.c.Id == FacesTable.c.MediaItemId)
            .join(MediaFileTable, MediaFileTable.c.Id == MediaItemsTable.c.MediaFileId)
            .order_by(FacesTable.c.Id)
        )
        if person_id is None:
            query = query.where(FacesTable.c.PersonId.isnot(None))
        else:
            query = query.where(FacesTable.c.PersonId == person_id)
        grouped: dict[int, list[FaceRow]] = {}
        with self.engine.connect() as conn:
            if person_id is not None:
                _require_person(conn, person_id)
                grouped[person_id] = []
            for r in conn.execute(query.execution_options(yield_per=5000)):
                grouped.setdefault(r.PersonId, []).append(
                    FaceRow(
                        r.Id,
                        r.PersonId,
                        r.MediaItemId,
                        media_path(r.FilePath, r.FileName, r.PathKey),
                        json.loads(r.BoundingBox or "[]"),
                        r.ThumbnailPath,
                        r.PersonAssignedBy,
                        r.FrameTime,
                        r.TrackId,
                    )  # fmt: skip
                )
        return grouped

    def rename_person(self, person_id: int, name: str) -> None:
        """Names the person and pins the faces it has now: the user looked at them and gave
        them a name, so no clustering or rebuild moves them away (faces joining later may)."""
        with self._write() as conn:
            _require_person(conn, person_id)
            key = name_key(name)
            automatic = _AUTOMATIC_NAME.fullmatch(key)
            if automatic and automatic.group(1) != str(person_id):
                raise CorrectionError(
                    f"{name!r} has the form of an automatic name, kept for person {automatic.group(1)}; "
                    "choose another name"
                )
            # Compared here, not by SQL lower(): it folds non-ASCII letters on some servers only.
            # Persons are few enough to read every name.
            others = conn.execute(
                select(PersonsTable.c.Id, PersonsTable.c.Name)
                .where(PersonsTable.c.Id != person_id, PersonsTable.c.Name.isnot(None))
                .order_by(PersonsTable.c.Id)
            )
            clash = next((row for row in others if name_key(row.Name) == key), None)
            if clash:
                raise CorrectionError(
                    f"person {clash.Id} is already named {clash.Name!r}; merge them instead"
                )
            conn.execute(
                update(PersonsTable)
                .where(PersonsTable.c.Id == person_id)
                .values(Name=name, IsUserNamed=True, ModifiedAt=utcnow())
            )
            _place(conn, _faces_of(conn, [person_id]), person_id)  # same person: sums unchanged

    def merge_persons(self, target_id: int, sources: Sequence[int]) -> int:
        """Every face of the sources into the target, the sources deleted; returns faces moved.
        The target keeps its name, or takes a source's user-given name if it has none. Faces
        rejected from a source count as rejected from the target: forgetting it erases them."""
        with self._write() as conn:
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
            moved = _faces_of(conn, sources)
            # Every face of the merged person is now the user's decision: a rebuild cannot undo it.
            kept = _faces_of(conn, [target_id])
            with tracking_person_sums(conn, moved):
                _place(conn, moved + kept, target_id)
            conn.execute(
                update(FacesTable)
                .where(FacesTable.c.RejectedFromPersonId.in_(sources))
                .values(RejectedFromPersonId=target_id, ModifiedAt=utcnow())
            )
            conn.execute(delete(PersonsTable).where(PersonsTable.c.Id.in_(sources)))
        return len(moved)

    def split_person(self, person_id: int, face_ids: Sequence[int]) -> MovedFaces:
        """The given faces of a person, and the other faces of their video tracks, into a new
        person; returns what moved and the new person's Id."""
        named = tuple(dict.fromkeys(face_ids))
        with self._write() as conn:
            _require_person(conn, person_id)
            _require_faces(conn, named)
            face_ids, tracks = _with_tracks(conn, named)
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
            new_id = insert_id(
                conn,
                insert(PersonsTable).values(Type="user", CreatedAt=now, ModifiedAt=now, EmbeddingCount=0),
            )
            conn.execute(
                update(PersonsTable).where(PersonsTable.c.Id == new_id).values(Name=f"Person {new_id}")
            )
            with tracking_person_sums(conn, face_ids):
                _place(conn, face_ids, new_id)
            # What stays with the person is now confirmed too: a later clustering must not undo the split.
            _place(conn, _faces_of(conn, [person_id]), person_id)
        return MovedFaces(named, tuple(face_ids), tracks, new_id)

    def move_face(self, face_id: int, person_id: int, force: bool = False) -> MovedFaces:
        """The face, and the other faces of its video track, into the person; returns what moved.
        Refused for a forgotten face, and (unless `force`: a mirror, a photo of a photo) when the
        person already has another face of the same photo: a photo shows a person once."""
        with self._write() as conn:
            _require_person(conn, person_id)
            _require_faces(conn, [face_id])
            moved, tracks = _with_tracks(conn, [face_id])
            _refuse_forgotten(conn, moved, face_id, f"put into person {person_id}")
            other = _same_photo_face(conn, moved, person_id)
            if other is not None and not force:
                raise CorrectionError(
                    f"person {person_id} already has face {other.Id} of the same photo "
                    f"(media item {other.MediaItemId}) as face {other.Mine}: a photo (or a frame "
                    "of a video) shows a person once; move that face first, or pass --force if "
                    "both really are this person"
                )
            with tracking_person_sums(conn, moved):
                _place(conn, moved, person_id)
                for part in chunks(moved):
                    # Put back, a rejected face is this person's: no longer the one it was taken from.
                    conn.execute(
                        update(FacesTable)
                        .where(FacesTable.c.Id.in_(part))
                        .values(IsRejected=False, RejectedFromPersonId=None)
                    )
        return MovedFaces((face_id,), tuple(moved), tracks, person_id)

    def reject_face(self, face_id: int) -> MovedFaces:
        """The face, and the other faces of its video track, out of every person; each keeps the
        person it was taken from, so that forgetting that person erases it too."""
        with self._write() as conn:
            _require_faces(conn, [face_id])
            rejected, tracks = _with_tracks(conn, [face_id])
            _refuse_forgotten(conn, rejected, face_id, "rejected: it is out of every person already")
            with tracking_person_sums(conn, rejected):
                for part in chunks(rejected):
                    # A statement of its own: MariaDB applies SET clauses left to right, so in one
                    # statement with PersonId=NULL it could read the NULL already written.
                    conn.execute(
                        update(FacesTable)
                        .where(FacesTable.c.Id.in_(part), FacesTable.c.PersonId.isnot(None))
                        .values(RejectedFromPersonId=FacesTable.c.PersonId)
                    )
                    conn.execute(
                        update(FacesTable)
                        .where(FacesTable.c.Id.in_(part))
                        .values(PersonId=None, PersonAssignedBy=USER, IsRejected=True, ModifiedAt=utcnow())
                    )
        return MovedFaces((face_id,), tuple(rejected), tracks, None)

    def forget_person(self, person_id: int) -> ForgottenFaces:
        """Deletes the person and erases every face ever linked to it: its faces and those
        rejected from it (or from a person merged into it) lose their embedding and thumbnail
        name, and stay as forgotten boxes so that no automatic step recreates them. Returns
        them with the thumbnail paths whose files the caller removes."""
        linked = or_(FacesTable.c.PersonId == person_id, FacesTable.c.RejectedFromPersonId == person_id)
        with self._write() as conn:
            _require_person(conn, person_id)
            rows = conn.execute(
                select(FacesTable.c.Id, FacesTable.c.ThumbnailPath, FacesTable.c.PersonId)
                .where(linked)
                .order_by(FacesTable.c.Id)
            ).all()
            conn.execute(
                update(FacesTable)
                .where(linked)
                .values(
                    PersonId=None,
                    Embedding=None,
                    BaseEmbedding=None,
                    EmbeddingModel=None,
                    ThumbnailPath=None,
                    Name=None,
                    IsRejected=True,
                    RejectedFromPersonId=None,
                    PersonAssignedBy=FORGOTTEN,
                    ModifiedAt=utcnow(),
                )  # fmt: skip
            )
            conn.execute(delete(PersonsTable).where(PersonsTable.c.Id == person_id))
        return ForgottenFaces(
            tuple(r.Id for r in rows),
            sum(r.PersonId is None for r in rows),
            tuple(r.ThumbnailPath for r in rows if r.ThumbnailPath),
        )
