"""The application tables, declared once for every dialect (SQLite, SQL Server, PostgreSQL).

Table and column names are those of existing deployments (DESIGN.md §2). Columns the product
needs beyond them are listed in PRODUCT_COLUMNS and added by `upgrade_schema`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Unicode,
    UnicodeText,
    false,
)
from sqlalchemy.dialects import mssql


def utcnow() -> datetime:
    """Naive UTC: DATETIME2 on SQL Server has no time zone."""
    return datetime.now(UTC).replace(tzinfo=None)


# Legacy SQL Server deployments keep DATETIME2; SQLAlchemy's DateTime would be DATETIME there,
# whose 3 ms rounding also breaks comparing a value read back (the lock's AcquiredAt).
Timestamp = DateTime().with_variant(mssql.DATETIME2(), "mssql")

metadata = MetaData()

# Ids are never reused: a person (or face, media item) deleted keeps its Id to itself, so an
# export folder, another application's row or a user's note naming it never points at someone
# else. The servers' identities and sequences never reuse; SQLite does only with AUTOINCREMENT.
NEVER_REUSED: dict[str, Any] = {"sqlite_autoincrement": True}

MediaFileTable = Table(
    "MediaFile",
    metadata,
    Column("Id", Integer, primary_key=True, autoincrement=True),
    Column("FilePath", Unicode(500), nullable=False),
    Column("FileName", Unicode(255), nullable=False),
    Column("Extensions", Unicode(10)),
    Column("CreatedAt", Timestamp, default=utcnow),
    Column("ModifiedAt", Timestamp, default=utcnow, onupdate=utcnow),
    # product columns
    Column("PathKey", String(64)),  # sha256 of the absolute path: one row per file
    Column("MediaFormat", String(16)),  # the format sniffed from the bytes, e.g. JPEG
    Column("FileSize", BigInteger),  # INT would stop at 2 GiB on the servers: videos are larger
    # What the file held when it was last read: a file replaced under the same name is seen by
    # its size or time, and told from one only touched by its content's sha256.
    Column("FileModifiedNs", BigInteger),
    Column("ContentHash", String(64)),
    # An identical copy of another file (same ContentHash): it has no media item of its own, the
    # other file's media item holds the faces, so the person is seen there once. No foreign
    # key: the pointer is moved, never followed by a join that must hold.
    Column("SameAsMediaFileId", Integer),
    Column("MissingSince", Timestamp),  # a folder scan found the file gone (NULL: present)
    # The movie of a Live Photo (IMG_1234.MOV beside IMG_1234.HEIC): the photo's MediaFile Id.
    # It has no media item: the photo's holds the faces of that moment, counted once. Not
    # SameAsMediaFileId, whose files stand in for each other when one goes missing.
    Column("LivePhotoOfMediaFileId", Integer),
    **NEVER_REUSED,
)

MediaItemsTable = Table(
    "MediaItems",
    metadata,
    Column("Id", Integer, primary_key=True, autoincrement=True),
    Column("MediaFileId", Integer, ForeignKey("MediaFile.Id"), nullable=False),
    Column("Name", Unicode(255), nullable=False),
    Column("IsFacesExtracted", Boolean, nullable=False, default=False, server_default=false()),
    Column("FacesExtractedOn", Timestamp),
    # product columns
    Column("ExtractionError", Unicode(1000)),
    Column("FaceCount", Integer),
    Column("DetectorName", String(64)),
    Column("ImageWidth", Integer),
    Column("ImageHeight", Integer),
    # Videos: the length and average frame rate FFmpeg reads; NULL for photos.
    Column("Duration", Float),  # seconds
    Column("FrameRate", Float),
    **NEVER_REUSED,
)

PersonsTable = Table(
    "Persons",
    metadata,
    Column("Id", Integer, primary_key=True, autoincrement=True),
    Column("PortraitMediaFileId", Integer, ForeignKey("MediaFile.Id")),
    Column("Name", Unicode(255)),
    Column("Rank", Unicode(50)),
    Column("Appointment", Unicode(100)),
    Column("Type", Unicode(50)),
    Column("CreatedAt", Timestamp, default=utcnow),
    Column("ModifiedAt", Timestamp, default=utcnow, onupdate=utcnow),
    # product columns
    Column("PortraitFaceId", Integer),
    Column("IsUserNamed", Boolean, default=False, server_default=false()),
    # Sum of the person's face embeddings (512 float32) and their count: a batch is matched
    # against the persons' means without reading their faces. NULL count: not computed yet.
    Column("EmbeddingSum", LargeBinary),
    Column("EmbeddingCount", Integer),
    **NEVER_REUSED,
)

FacesTable = Table(
    "Faces",
    metadata,
    Column("Id", Integer, primary_key=True, autoincrement=True),
    Column("MediaItemId", Integer, ForeignKey("MediaItems.Id"), nullable=False),
    Column("PersonId", Integer, ForeignKey("Persons.Id")),
    Column("BoundingBox", Unicode(255)),  # JSON [x1, y1, x2, y2], original-image pixels
    Column("Embedding", LargeBinary),  # 512 float32 as raw bytes (JSON text also read)
    Column("FrameNumber", Integer),  # videos: the frame among the video's decoded frames, from 0
    Column("Name", Unicode(255)),  # thumbnail file name
    Column("IsUserVerified", Boolean, default=False, server_default=false()),
    Column("CreatedAt", Timestamp, default=utcnow),
    Column("ModifiedAt", Timestamp, default=utcnow, onupdate=utcnow),
    # product columns
    Column("DetectionScore", Float),
    Column("Sharpness", Float),  # variance of the Laplacian of the thumbnail: portraits prefer sharp faces
    Column("Landmarks", Unicode(500)),  # JSON [[x, y] x 5]
    Column("ThumbnailPath", Unicode(500)),  # relative to the thumbnail folder
    Column("EmbeddingModel", String(64)),
    # A tuned model's face (EmbeddingModel ...-tuned-...): its base model's embedding, from which
    # the library moves to another tuned model, or back to the base, without reading a photo.
    Column("BaseEmbedding", LargeBinary),
    Column("FrameTime", Float),  # videos: seconds from the start of the video
    Column("TrackId", Integer),  # videos: the first face of the track this face is part of
    # "match", "cluster", "noise" (seen by clustering, no person), "user" (a correction),
    # "forgotten" (erased with its person)
    Column("PersonAssignedBy", String(16)),
    # A user said: not a face, or a stranger; kept out of every automatic step.
    Column("IsRejected", Boolean, default=False, server_default=false()),
    # The person a rejected face was taken from: forgetting that person erases it too. No foreign
    # key: the person may be gone (merged, emptied) and the face must stay.
    Column("RejectedFromPersonId", Integer),
    Column("PersonSimilarity", Float),
    Column("Notes", UnicodeText),
    **NEVER_REUSED,
)

# Product table: named locks, so that two clusterings never write persons at the same time,
# whichever scheduler, command or UI started them.
LocksTable = Table(
    "FaceAssetsLocks",
    metadata,
    Column("Name", String(64), primary_key=True),
    Column("Owner", Unicode(255), nullable=False),
    Column("AcquiredAt", Timestamp, nullable=False),
    # Who holds it, so that a holder that is gone is seen at once: its process on this host,
    # or a heartbeat that stopped when it runs on another.
    Column("Host", Unicode(255)),
    Column("Pid", Integer),
    Column("HeartbeatAt", Timestamp),
)

# Columns of the product's own tables added after their first release: `upgrade_schema` adds
# them to a database made by an earlier one.
LATER_COLUMNS: dict[str, tuple[str, ...]] = {"FaceAssetsLocks": ("Host", "Pid", "HeartbeatAt")}

LEGACY_COLUMNS: dict[str, tuple[str, ...]] = {
    "MediaFile": ("Id", "FilePath", "FileName", "Extensions", "CreatedAt", "ModifiedAt"),
    "MediaItems": ("Id", "MediaFileId", "Name", "IsFacesExtracted", "FacesExtractedOn"),
    "Faces": (
        "Id",
        "MediaItemId",
        "PersonId",
        "BoundingBox",
        "Embedding",
        "FrameNumber",
        "Name",
        "IsUserVerified",
        "CreatedAt",
        "ModifiedAt",
    ),  # fmt: skip
    "Persons": (
        "Id",
        "PortraitMediaFileId",
        "Name",
        "Rank",
        "Appointment",
        "Type",
        "CreatedAt",
        "ModifiedAt",
    ),  # fmt: skip
}

# Columns the product adds to the legacy tables (its own tables are created whole).
PRODUCT_COLUMNS: dict[str, tuple[str, ...]] = {
    table.name: tuple(c.name for c in table.columns if c.name not in LEGACY_COLUMNS[table.name])
    for table in metadata.sorted_tables
    if table.name in LEGACY_COLUMNS
}

# SQL Server lets a unique index hold one NULL only; legacy rows have no PathKey.
Index(
    "IX_MediaFile_PathKey",
    MediaFileTable.c.PathKey,
    unique=True,
    mssql_where=MediaFileTable.c.PathKey.isnot(None),
)
Index("IX_MediaFile_ContentHash", MediaFileTable.c.ContentHash)
Index("IX_MediaFile_SameAsMediaFileId", MediaFileTable.c.SameAsMediaFileId)
Index("IX_MediaItems_MediaFileId", MediaItemsTable.c.MediaFileId)
Index("IX_MediaItems_IsFacesExtracted", MediaItemsTable.c.IsFacesExtracted)
Index("IX_Faces_MediaItemId", FacesTable.c.MediaItemId)
Index("IX_Faces_PersonId", FacesTable.c.PersonId)
# A batch's unassigned faces (PersonId NULL, MediaItemId in the batch's range): with PersonId
# alone, SQLite walks every unassigned face of the library to find the batch's.
Index("IX_Faces_PersonId_MediaItemId", FacesTable.c.PersonId, FacesTable.c.MediaItemId)
# Whether any face is embedded by another model than the current one: two index ranges, not a
# scan of every face, on each embedding step.
Index("IX_Faces_EmbeddingModel", FacesTable.c.EmbeddingModel)
