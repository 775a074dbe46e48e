"""Media files as the disk holds them: registered once each, known by their content as well as
their path, so that a file replaced under the same name is processed again, an identical copy
is one media item with two paths, and a file that is gone is reported, not forgotten.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    Engine,
    String,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from face_assets.core.storage.codecs import chunks, media_path, path_key
from face_assets.core.storage.errors import is_deadlock
from face_assets.core.storage.fencing import FencedWrites
from face_assets.core.storage.persons import tracking_person_sums
from face_assets.core.storage.schema import FacesTable, MediaFileTable, MediaItemsTable, PersonsTable, utcnow
from face_assets.core.storage.terms import FILE_COLUMNS, insert_id


@dataclass(frozen=True)
class FileFacts:
    """A file as the disk holds it now."""

    path: Path
    media_format: str
    size: int
    modified_ns: int | None = None
    content_hash: str | None = None  # sha256 hex of the bytes
    # The movie of a Live Photo: its photo's MediaFile Id (the movie gets no media item).
    live_photo_of: int | None = None


@dataclass(frozen=True)
class KnownFile:
    """A registered file as the database last saw it."""

    id: int
    path: Path
    size: int | None
    modified_ns: int | None
    content_hash: str | None
    missing: bool
    live_photo_of: int | None = None  # the movie of a Live Photo: its photo's MediaFile Id


# ("new", its media item), ("known", None), ("copy", the twin's media item) or ("live", the
# media item of the Live Photo's photo, None when that photo has none).
Registered = tuple[Literal["new", "known", "copy", "live"], int | None]


@dataclass
class Retired:
    """What `replace_media_file` (or `link_live_photo`) took away: the item's faces (thumbnail
    files for the caller to remove once the rows are gone) or, when an identical copy of the old
    content exists, nothing: the item moved to that copy (and the changed file has a new item)."""

    media_item_ids: list[int] = field(default_factory=list)  # the items to process again
    faces: int = 0
    thumbnails: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MissingFile:
    media_item_id: int | None  # None: a copy whose twin holds the media item
    path: Path
    since: datetime


# A registration chosen as a deadlock victim is retried this many times before it fails.
REGISTER_ATTEMPTS = 5
# Legacy rows have no PathKey: they are found by folder + name, or by the full path.
_KNOWN_FILE = select(MediaFileTable.c.Id).where(
    or_(
        MediaFileTable.c.PathKey == bindparam("key"),
        and_(
            MediaFileTable.c.PathKey.is_(None),
            or_(
                and_(
                    MediaFileTable.c.FilePath == bindparam("folder"),
                    MediaFileTable.c.FileName == bindparam("name"),
                ),
                MediaFileTable.c.FilePath == bindparam("full"),
            ),
        ),
    )
)
_INSERT_FILE = insert(MediaFileTable)
_INSERT_ITEM = insert(MediaItemsTable)
# What detection wrote on an item: cleared when its file's content is replaced.
_UNPROCESSED = {
    "IsFacesExtracted": False, "FacesExtractedOn": None, "ExtractionError": None, "FaceCount": None,
    "DetectorName": None, "ImageWidth": None, "ImageHeight": None, "Duration": None, "FrameRate": None,
}  # fmt: skip


def _holder(conn: Connection, content_hash: str, size: int, hash_of: Callable[[Path], str | None]) -> Any:
    """The present file with this content that holds a media item, or None. Files registered
    before contents were hashed are hashed here when their size matches (and remembered)."""
    has_item = select(MediaItemsTable.c.Id).where(MediaItemsTable.c.MediaFileId == MediaFileTable.c.Id)
    query = select(MediaFileTable.c.Id, *FILE_COLUMNS, MediaFileTable.c.ContentHash).where(
        has_item.exists(), MediaFileTable.c.MissingSince.is_(None)
    )
    found = conn.execute(query.where(MediaFileTable.c.ContentHash == content_hash).limit(1)).first()
    if found is not None:
        return found
    unhashed = query.where(MediaFileTable.c.ContentHash.is_(None), MediaFileTable.c.FileSize == size)
    for row in conn.execute(unhashed.limit(20)).all():
        digest = hash_of(media_path(row.FilePath, row.FileName, row.PathKey))
        if digest is None:
            continue
        conn.execute(update(MediaFileTable).where(MediaFileTable.c.Id == row.Id).values(ContentHash=digest))
        if digest == content_hash:
            return row
    return None


def _retire_faces(conn: Connection, items: Sequence[int]) -> Retired:
    """Deletes the faces of these media items, with their person links, sums and portraits;
    returns them for the caller (the thumbnail files to remove once the rows are gone)."""
    faces = conn.execute(
        select(FacesTable.c.Id, FacesTable.c.ThumbnailPath).where(FacesTable.c.MediaItemId.in_(items))
    ).all()
    face_ids = [f.Id for f in faces]
    with tracking_person_sums(conn, face_ids):
        for part in chunks(face_ids):
            conn.execute(
                update(PersonsTable)
                .where(PersonsTable.c.PortraitFaceId.in_(part))
                .values(PortraitFaceId=None)
            )
            conn.execute(delete(FacesTable).where(FacesTable.c.Id.in_(part)))
    return Retired(list(items), len(face_ids), [f.ThumbnailPath for f in faces if f.ThumbnailPath])


def _item_of(conn: Connection, file_id: int) -> int | None:
    """The media item holding a file's faces: its own, or its identical twin's."""
    own = select(MediaItemsTable.c.Id).where(MediaItemsTable.c.MediaFileId == file_id).limit(1)
    item = conn.execute(own).scalar()
    if item is None:
        twin = conn.execute(
            select(MediaFileTable.c.SameAsMediaFileId).where(MediaFileTable.c.Id == file_id)
        ).scalar()
        if twin is not None:
            item = conn.execute(
                select(MediaItemsTable.c.Id).where(MediaItemsTable.c.MediaFileId == twin).limit(1)
            ).scalar()
    return None if item is None else int(item)


def _move_items_to_copy(conn: Connection, file_id: int) -> Any:
    """The file's media items to its first present identical copy, which stands for the content
    from now on (the other copies point at it); returns that copy's row, or None when it has none."""
    copy = conn.execute(
        select(MediaFileTable.c.Id, *FILE_COLUMNS)
        .where(MediaFileTable.c.SameAsMediaFileId == file_id, MediaFileTable.c.MissingSince.is_(None))
        .order_by(MediaFileTable.c.Id)
        .limit(1)
    ).first()
    if copy is None:
        return None
    conn.execute(
        update(MediaItemsTable).where(MediaItemsTable.c.MediaFileId == file_id).values(MediaFileId=copy.Id)
    )
    conn.execute(
        update(MediaFileTable)
        .where(or_(MediaFileTable.c.SameAsMediaFileId == file_id, MediaFileTable.c.Id == file_id))
        .values(SameAsMediaFileId=copy.Id)
    )
    conn.execute(update(MediaFileTable).where(MediaFileTable.c.Id == copy.Id).values(SameAsMediaFileId=None))
    return copy


def _user_placed(conn: Connection, items: Sequence[int]) -> bool:
    """Whether a user placed, verified or rejected a face of these media items."""
    query = select(FacesTable.c.Id).where(
        FacesTable.c.MediaItemId.in_(items),
        or_(
            FacesTable.c.PersonAssignedBy == "user",
            FacesTable.c.IsUserVerified == true(),
            FacesTable.c.IsRejected == true(),
        ),
    )
    return conn.execute(query.limit(1)).first() is not None


class MediaFilesMixin(FencedWrites):
    engine: Engine

    def register_media_file(self, path: Path, media_format: str, size: int) -> int | None:
        """Adds a MediaFile and its MediaItems row; None when the file is already registered."""
        return self.register_media_files([(path, media_format, size)])[0]

    def register_media_files(self, files: Sequence[tuple[Path, str, int]]) -> list[int | None]:
        """`register_media_file` for each (path, format, size), in one transaction."""
        registered = self.register_files([FileFacts(*file) for file in files])
        return [item if kind == "new" else None for kind, item in registered]

    def register_files(
        self, files: Sequence[FileFacts], hash_of: Callable[[Path], str | None] = lambda _: None
    ) -> list[Registered]:
        """Registers each file in one transaction: ("new", its new media item), ("known", None)
        when its path is registered, ("copy", the media item) when it is an identical copy of a
        registered file (same content hash): one media item, both paths known; or ("live", the
        photo's media item) for the movie of a Live Photo (`live_photo_of` set): no media item.

        A commit per file was most of a registration's time. Each file's rows go in together
        or not at all, and a killed run leaves none of them: the rerun registers them again."""
        guarded = False
        for attempt in range(REGISTER_ATTEMPTS):
            try:
                with self._write() as conn:
                    return [self._register(conn, file, guarded, hash_of) for file in files]
            except IntegrityError:
                # A concurrent run registered one of these files meanwhile: again, each file in
                # a savepoint of its own so that the one taken is skipped and the others go in.
                guarded = True
            except DBAPIError as error:
                # Two runs inserting beside each other in one unique index: MariaDB may pick
                # one as a deadlock victim. Its transaction was rolled back whole; go again.
                if not is_deadlock(error) or attempt == REGISTER_ATTEMPTS - 1:
                    raise
                guarded = True
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")  # the loop returns or raises

    def _register(
        self, conn: Connection, file: FileFacts, guarded: bool, hash_of: Callable[[Path], str | None]
    ) -> Registered:
        absolute = file.path.resolve()
        known = {"key": path_key(absolute), "folder": str(absolute.parent), "name": absolute.name}
        if conn.execute(_KNOWN_FILE, {**known, "full": str(absolute)}).first():
            return "known", None
        try:
            with conn.begin_nested() if guarded else nullcontext():
                if file.live_photo_of is not None:
                    insert_id(conn, _INSERT_FILE, {
                        "FilePath": known["folder"], "FileName": absolute.name, "PathKey": known["key"],
                        "Extensions": absolute.suffix.lstrip(".").lower()[:10] or None,
                        "MediaFormat": file.media_format, "FileSize": file.size,
                        "FileModifiedNs": file.modified_ns, "ContentHash": file.content_hash,
                        "LivePhotoOfMediaFileId": file.live_photo_of,
                    })  # fmt: skip
                    return "live", _item_of(conn, file.live_photo_of)
                twin = _holder(conn, file.content_hash, file.size, hash_of) if file.content_hash else None
                file_id = insert_id(
                    conn,
                    _INSERT_FILE,
                    {"FilePath": known["folder"], "FileName": absolute.name, "PathKey": known["key"],
                     "Extensions": absolute.suffix.lstrip(".").lower()[:10] or None,
                     "MediaFormat": file.media_format, "FileSize": file.size,
                     "FileModifiedNs": file.modified_ns, "ContentHash": file.content_hash,
                     "SameAsMediaFileId": twin.Id if twin is not None else None},
                )  # fmt: skip
                if twin is not None:
                    item = conn.execute(
                        select(MediaItemsTable.c.Id).where(MediaItemsTable.c.MediaFileId == twin.Id).limit(1)
                    ).scalar_one()
                    return "copy", int(item)
                return "new", insert_id(
                    conn,
                    _INSERT_ITEM,
                    {"MediaFileId": file_id, "Name": absolute.name[:255], "IsFacesExtracted": False},
                )
        except IntegrityError:
            if not guarded:
                raise
            return "known", None  # registered by a concurrent run a moment ago

    def known_files(self, folder: Path | None = None, keys: Sequence[str] = ()) -> dict[str, KnownFile]:
        """Every file this product registered (they carry a PathKey) below `folder` (resolved;
        None: everywhere), or of the given PathKeys, by PathKey: a scan of one folder reads that
        folder's rows, not the library's."""
        query = select(
            MediaFileTable.c.Id,
            *FILE_COLUMNS,
            MediaFileTable.c.FileSize,
            MediaFileTable.c.FileModifiedNs,
            MediaFileTable.c.ContentHash,
            MediaFileTable.c.MissingSince,
            MediaFileTable.c.LivePhotoOfMediaFileId,
        ).where(MediaFileTable.c.PathKey.isnot(None))
        if keys:
            query = query.where(MediaFileTable.c.PathKey.in_(list(keys)))
        elif folder is not None:
            below = str(folder).rstrip(os.sep) + os.sep
            query = query.where(
                or_(
                    MediaFileTable.c.FilePath == str(folder),
                    MediaFileTable.c.FilePath.startswith(below, autoescape=True),
                )
            )
        with self.engine.connect() as conn:
            return {
                r.PathKey: KnownFile(
                    r.Id,
                    media_path(r.FilePath, r.FileName, r.PathKey),
                    r.FileSize,
                    r.FileModifiedNs,
                    r.ContentHash,
                    r.MissingSince is not None,
                    r.LivePhotoOfMediaFileId,
                )  # fmt: skip
                for r in conn.execute(query.execution_options(yield_per=10_000))
            }

    def note_files(self, files: Sequence[tuple[int, FileFacts]]) -> None:
        """Records what known files hold now, when that is what they held (a touched file, a
        file back from missing, a row of an earlier release without its time)."""
        if not files:
            return
        statement = (
            update(MediaFileTable)
            .where(MediaFileTable.c.Id == bindparam("file_id"))
            .values(
                FileSize=bindparam("size"),
                FileModifiedNs=bindparam("modified"),
                # An unknown hash (a row of an earlier release) stays as it was, not cleared.
                ContentHash=func.coalesce(bindparam("hash", type_=String), MediaFileTable.c.ContentHash),
                MissingSince=None,
            )
        )
        rows = [
            {"file_id": i, "size": f.size, "modified": f.modified_ns, "hash": f.content_hash}
            for i, f in files
        ]  # fmt: skip
        with self._write() as conn:
            conn.execute(statement, rows)

    def replace_media_file(self, file_id: int, now: FileFacts) -> Retired:
        """A file whose content changed under the same path, in one transaction: its media item
        moves to an identical copy of the old content if one is present; otherwise the item's
        faces (person links, sums, tracks) are deleted and the item is pending again. Either
        way the file's row records the new content and is processed again."""
        retired = Retired()
        with self._write() as conn:
            items = list(
                conn.execute(
                    select(MediaItemsTable.c.Id).where(MediaItemsTable.c.MediaFileId == file_id)
                ).scalars()
            )
            copy = _move_items_to_copy(conn, file_id) if items else None
            if copy is not None:
                new_item = {"MediaFileId": file_id, "Name": now.path.name[:255], "IsFacesExtracted": False}
                retired.media_item_ids = [insert_id(conn, _INSERT_ITEM, new_item)]
            else:
                retired = _retire_faces(conn, items)
                if items:
                    conn.execute(
                        update(MediaItemsTable)
                        .where(MediaItemsTable.c.Id.in_(items))
                        .values(Name=now.path.name[:255], **_UNPROCESSED)
                    )
            conn.execute(
                update(MediaFileTable)
                .where(MediaFileTable.c.Id == file_id)
                .values(
                    MediaFormat=now.media_format,
                    FileSize=now.size,
                    FileModifiedNs=now.modified_ns,
                    ContentHash=now.content_hash,
                    MissingSince=None,
                    SameAsMediaFileId=None,
                    ModifiedAt=utcnow(),
                )  # fmt: skip
            )
        return retired

    def mark_missing(self, file_ids: Sequence[int]) -> int:
        """Files a scan found gone: kept with the time they were missed, their faces and persons
        untouched (the user decides); a media item whose file has a present identical copy moves
        to that copy. Returns the files newly missed."""
        missed = 0
        now = utcnow()
        with self._write() as conn:
            for part in chunks(file_ids):
                missed += int(
                    conn.execute(
                        update(MediaFileTable)
                        .where(MediaFileTable.c.Id.in_(part), MediaFileTable.c.MissingSince.is_(None))
                        .values(MissingSince=now)
                    ).rowcount
                )
            for file_id in file_ids:
                _move_items_to_copy(conn, file_id)
        return missed

    def link_live_photo(self, movie_file_id: int, photo_file_id: int) -> tuple[Retired, int | None] | None:
        """A registered movie found to be a Live Photo's (its photo registered in a later scan),
        in one transaction: its media item is retired, faces and all, as the photo's holds
        that moment; or it moves to an identical copy of the movie, which stands alone. Returns
        what was retired and the photo's media item; None, and nothing changed, when a user
        placed, verified or rejected one of its faces: that work is kept, with the movie as a
        media item of its own."""
        with self._write() as conn:
            items = list(
                conn.execute(
                    select(MediaItemsTable.c.Id).where(MediaItemsTable.c.MediaFileId == movie_file_id)
                ).scalars()
            )
            if items and _user_placed(conn, items):
                return None
            retired = Retired()
            if items and _move_items_to_copy(conn, movie_file_id) is None:
                retired = _retire_faces(conn, items)
                conn.execute(delete(MediaItemsTable).where(MediaItemsTable.c.Id.in_(items)))
            conn.execute(
                update(MediaFileTable)
                .where(MediaFileTable.c.Id == movie_file_id)
                .values(LivePhotoOfMediaFileId=photo_file_id, SameAsMediaFileId=None, ModifiedAt=utcnow())
            )
            return retired, _item_of(conn, photo_file_id)

    def missing_files(self) -> list[MissingFile]:
        """Files a scan found gone, with the media item each one's faces belong to."""
        query = (
            select(MediaItemsTable.c.Id.label("ItemId"), *FILE_COLUMNS, MediaFileTable.c.MissingSince)
            .outerjoin(MediaItemsTable, MediaItemsTable.c.MediaFileId == MediaFileTable.c.Id)
            .where(MediaFileTable.c.MissingSince.isnot(None))
            .order_by(MediaFileTable.c.Id)
        )
        with self.engine.connect() as conn:
            return [
                MissingFile(r.ItemId, media_path(r.FilePath, r.FileName, r.PathKey), r.MissingSince)
                for r in conn.execute(query)
            ]

    def copies_of_media_items(self, media_item_ids: Sequence[int]) -> dict[int, list[Path]]:
        """Other paths of each media item's file: its identical copies."""
        twin = MediaFileTable.alias("Copy")
        query = (
            select(MediaItemsTable.c.Id, twin.c.FilePath, twin.c.FileName, twin.c.PathKey)
            .join(twin, twin.c.SameAsMediaFileId == MediaItemsTable.c.MediaFileId)
            .order_by(twin.c.Id)
        )
        out: dict[int, list[Path]] = {}
        with self.engine.connect() as conn:
            for part in chunks(media_item_ids):
                for r in conn.execute(query.where(MediaItemsTable.c.Id.in_(part))):
                    out.setdefault(r.Id, []).append(media_path(r.FilePath, r.FileName, r.PathKey))
        return out
