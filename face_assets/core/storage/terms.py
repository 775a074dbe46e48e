"""WHERE terms and statements the storage modules share."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Insert, false, or_

from face_assets.core.batch import IdRange
from face_assets.core.storage.schema import FacesTable, MediaFileTable, MediaItemsTable

# What media_path needs to rebuild a file's path from a MediaFile row.
FILE_COLUMNS = (MediaFileTable.c.FilePath, MediaFileTable.c.FileName, MediaFileTable.c.PathKey)


def in_range(column: Any, id_range: IdRange) -> list[Any]:
    """WHERE terms limiting a media item id column to a batch; none for the whole library."""
    if id_range is None:
        return []
    return [column >= id_range[0], column <= id_range[1]]


def not_rejected() -> Any:
    """Faces a user has not rejected (legacy rows hold NULL)."""
    return or_(FacesTable.c.IsRejected.is_(None), FacesTable.c.IsRejected == false())


def pending() -> Any:
    """Media items not yet through detection (legacy rows may hold NULL)."""
    return or_(MediaItemsTable.c.IsFacesExtracted.is_(None), MediaItemsTable.c.IsFacesExtracted == false())


def insert_id(conn: Connection, statement: Insert, values: dict[str, Any] | None = None) -> int:
    """Executes one INSERT (of `values`, if given) and returns the new row's identity."""
    key = conn.execute(statement, values).inserted_primary_key
    assert key is not None
    return int(key[0])
