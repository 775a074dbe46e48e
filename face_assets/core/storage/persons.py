"""Person state: which face belongs to whom, each person's embedding sum and count, portraits.

Every person row carries the sum of its faces' embeddings and their count (`EmbeddingSum`,
`EmbeddingCount`), updated in the same transaction as the faces' `PersonId`. Matching a batch
then reads the batch's faces and one row per person, never the library's embeddings. The sum
counts the faces with `PersonId` = the person, a readable 512-d embedding and not rejected.
A person whose sum is missing (rows written by another application, a database upgraded from
an older release) gets it recomputed from its own faces when next read; a full clustering
rewrites every sum from the embeddings it has read anyway.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    case,
    delete,
    exists,
    false,
    insert,
    or_,
    select,
    true,
    update,
)

from face_assets.core.batch import IdRange
from face_assets.core.clustering.membership import group_sums
from face_assets.core.clustering.vectors import l2_normalize
from face_assets.core.storage.codecs import (
    EMBEDDING_DIM,
    FUSED_DIM,
    chunks,
    decode_embedding,
    encode_embedding,
)
from face_assets.core.storage.fencing import FencedWrites
from face_assets.core.storage.schema import FacesTable, MediaItemsTable, PersonsTable, utcnow
from face_assets.core.storage.terms import in_range, insert_id, not_rejected

logger = logging.getLogger(__name__)


def _video_frame() -> Any:
    """A face's frame when its media item is a video (it has a length), else NULL: the legacy
    tools stored frame 0 for the faces of photos."""
    frame = case((MediaItemsTable.c.Duration.isnot(None), FacesTable.c.FrameNumber), else_=None)
    return frame.label("VideoFrame")


def sighting_key(media_item_id: int, frame: int | None) -> int:
    """A photo's media item id; for a video frame a negative key from its item and frame.
    Within 31 bits, as the membership rule pairs keys with person ids in one int64: two frames
    may share a key once in two billion, which only keeps their faces apart."""
    if frame is None:
        return media_item_id
    return -1 - (media_item_id * 1_000_003 + frame) % ((1 << 31) - 1)


@dataclass(frozen=True)
class FaceEmbeddings:
    """Embedded faces: ids, owners and a (n_faces, 512) matrix, row-aligned."""

    face_ids: NDArray[np.int64]
    media_item_ids: NDArray[np.int64]
    person_ids: NDArray[np.int64]  # -1 = unassigned
    clustered: NDArray[np.bool_]  # already seen by a clustering pass
    user_placed: NDArray[np.bool_]  # put there by a user correction: never moved automatically
    vectors: NDArray[np.float32]
    # What two faces must not share to be one person: a photo's media item id, or for a face in
    # a video a key of its media item and frame (sighting_key), as one video shows a person in
    # many frames but once per frame.
    sightings: NDArray[np.int64]
    track_ids: NDArray[np.int64]  # a video face's track (its first face's id), 0 for none
    sharpness: NDArray[np.float32]  # of its thumbnail (Faces.Sharpness), NaN when unknown


@dataclass(frozen=True)
class PersonMeans:
    """Every person with embedded faces: ids, unit-norm mean embeddings (n_persons, 512) and
    face counts, row-aligned."""

    person_ids: NDArray[np.int64]
    centroids: NDArray[np.float32]
    counts: NDArray[np.int64]


@dataclass(frozen=True)
class PortraitCandidate:
    """What the portrait score needs of one face."""

    face_id: int
    person_id: int
    media_file_id: int
    box_xyxy: list[float]
    landmarks: list[list[float]]
    sharpness: float | None
    vector: NDArray[np.float32] | None


def _vector(value: Any) -> NDArray[np.float32] | None:
    """A usable embedding (or sum) from a column value, or None (the embedding check names bad
    ones). Which model's it is the library's one model says (require_one_model)."""
    try:
        vector = decode_embedding(value)
    except ValueError:
        return None
    return vector if vector is not None and vector.shape in ((EMBEDDING_DIM,), (FUSED_DIM,)) else None


def _plus(total: NDArray[np.float64] | None, vector: NDArray[np.floating]) -> NDArray[np.float64]:
    """A running sum whose length is the first vector's: the library's model decides it."""
    return vector.astype(np.float64) if total is None else total + vector


def _sum_rows(person_ids: Any, sums: Any, counts: Any) -> list[dict[str, Any]]:
    return [
        {
            "person_id": int(p),
            "sum": encode_embedding(s) if c and s is not None else None,
            # Faces but no sum (a row another tool wrote): left to be summed from its faces.
            "count": int(c) if s is not None or not c else None,
        }
        for p, s, c in zip(person_ids, sums, counts, strict=True)
    ]


# Bookkeeping, not an edit of the person: ModifiedAt, which other applications read, stays.
_WRITE_SUM = (
    update(PersonsTable)
    .where(PersonsTable.c.Id == bindparam("person_id"))
    .values(
        EmbeddingSum=bindparam("sum"),
        EmbeddingCount=bindparam("count"),
        ModifiedAt=PersonsTable.c.ModifiedAt,  # not the column's onupdate
    )
)


def _contributions(conn: Connection, face_ids: Sequence[int]) -> dict[int, tuple[Any, int]]:
    """Per person, the sum and count the given faces add to it as the rows stand now."""
    out: dict[int, tuple[Any, int]] = {}
    for part in chunks(face_ids):
        query = select(FacesTable.c.PersonId, FacesTable.c.Embedding).where(
            FacesTable.c.Id.in_(part),
            FacesTable.c.PersonId.isnot(None),
            FacesTable.c.Embedding.isnot(None),
            not_rejected(),
        )
        for row in conn.execute(query):
            vector = _vector(row.Embedding)
            if vector is None:
                continue
            total, count = out.get(row.PersonId, (None, 0))
            out[row.PersonId] = (_plus(total, vector), count + 1)
    return out


def recompute_person_sums(conn: Connection, person_ids: Iterable[int] | None = None) -> int:
    """Sums and counts of the given persons (every person when None) rebuilt from their faces,
    in the caller's transaction; returns the persons written."""
    if person_ids is None:
        person_ids = list(conn.execute(select(PersonsTable.c.Id)).scalars())
    ids = sorted({int(p) for p in person_ids})
    for part in chunks(ids):
        sums: dict[int, NDArray[np.float64] | None] = dict.fromkeys(part)
        counts = dict.fromkeys(part, 0)
        query = select(FacesTable.c.PersonId, FacesTable.c.Embedding).where(
            FacesTable.c.PersonId.in_(part), FacesTable.c.Embedding.isnot(None), not_rejected()
        )
        for row in conn.execute(query.execution_options(yield_per=2000)):
            vector = _vector(row.Embedding)
            if vector is not None:
                sums[row.PersonId] = _plus(sums[row.PersonId], vector)
                counts[row.PersonId] += 1
        conn.execute(_WRITE_SUM, _sum_rows(part, [sums[p] for p in part], [counts[p] for p in part]))
    return len(ids)


@contextmanager
def tracking_person_sums(conn: Connection, face_ids: Sequence[int]) -> Iterator[None]:
    """Keeps the persons' sums right while the block changes the given faces (PersonId,
    Embedding, IsRejected) in the same transaction: what the faces added before is taken off,
    what they add after is put on. Work is proportional to the faces, not to the persons."""
    face_ids = [int(f) for f in face_ids]
    before = _contributions(conn, face_ids)
    yield
    after = _contributions(conn, face_ids)
    touched = sorted(set(before) | set(after))
    stored: dict[int, Any] = {}
    for part in chunks(touched):
        query = select(PersonsTable.c.Id, PersonsTable.c.EmbeddingSum, PersonsTable.c.EmbeddingCount)
        stored.update({r.Id: r for r in conn.execute(query.where(PersonsTable.c.Id.in_(part)))})
    shifted, unknown = [], []
    for person in touched:
        row = stored.get(person)
        if row is None:
            continue  # deleted in the block
        if row.EmbeddingCount is None:
            unknown.append(person)  # never summed: its own faces give it, after the change
            continue
        stored_sum = _vector(row.EmbeddingSum) if row.EmbeddingSum is not None else None
        if stored_sum is None and row.EmbeddingSum is not None:
            unknown.append(person)  # an unreadable sum: its own faces give it again
            continue
        total = None if stored_sum is None else stored_sum.astype(np.float64)
        added, joined = after.get(person, (None, 0))
        taken, left = before.get(person, (None, 0))
        if added is not None:
            total = _plus(total, added)
        if taken is not None:
            total = _plus(total, -taken)
        count = max(int(row.EmbeddingCount) + joined - left, 0)
        shifted.append((person, total if count else None, count))
    if shifted:
        ids, sums, counts = zip(*shifted, strict=True)
        conn.execute(_WRITE_SUM, _sum_rows(ids, sums, counts))
    if unknown:
        recompute_person_sums(conn, unknown)


class PersonsMixin(FencedWrites):
    engine: Engine

    def face_embeddings(self, id_range: IdRange = None, unassigned_only: bool = False) -> FaceEmbeddings:
        """Embedded, not rejected faces: all of them, or a batch's (`id_range` of media items),
        optionally only those without a person."""
        terms = [
            FacesTable.c.Embedding.isnot(None),
            not_rejected(),
            *in_range(FacesTable.c.MediaItemId, id_range),
        ]
        if unassigned_only:
            terms.append(FacesTable.c.PersonId.is_(None))
        query = (
            select(
                FacesTable.c.Id,
                FacesTable.c.MediaItemId,
                _video_frame(),
                FacesTable.c.PersonId,
                FacesTable.c.PersonAssignedBy,
                FacesTable.c.IsUserVerified,
                FacesTable.c.Embedding,
                FacesTable.c.TrackId,
                FacesTable.c.Sharpness,
            )  # fmt: skip
            .join(MediaItemsTable, MediaItemsTable.c.Id == FacesTable.c.MediaItemId)
            .where(*terms)
            .order_by(FacesTable.c.Id)
        )
        ids, items, sightings, tracks, persons, clustered, placed, vectors = [], [], [], [], [], [], [], []
        sharp: list[float] = []
        with self.engine.connect() as conn:
            for row in conn.execute(query.execution_options(yield_per=5000)):
                vector = _vector(row.Embedding)
                if vector is None:
                    logger.warning("face %s has no usable embedding; skipped", row.Id)
                    continue
                ids.append(row.Id)
                items.append(row.MediaItemId)
                sightings.append(sighting_key(row.MediaItemId, row.VideoFrame))
                tracks.append(row.TrackId or 0)
                persons.append(-1 if row.PersonId is None else row.PersonId)
                clustered.append(row.PersonAssignedBy is not None)
                # A face the legacy tools marked verified is the user's decision as well.
                legacy_verified = row.PersonAssignedBy is None and bool(row.IsUserVerified) and row.PersonId
                placed.append(row.PersonAssignedBy == "user" or bool(legacy_verified))
                vectors.append(vector)
                sharp.append(np.nan if row.Sharpness is None else row.Sharpness)
        # No faces: any width serves, nothing is compared.
        matrix = np.vstack(vectors) if vectors else np.zeros((0, EMBEDDING_DIM), np.float32)
        return FaceEmbeddings(
            np.asarray(ids, dtype=np.int64), np.asarray(items, dtype=np.int64),
            np.asarray(persons, dtype=np.int64), np.asarray(clustered, dtype=bool),
            np.asarray(placed, dtype=bool),
            matrix.astype(np.float32), np.asarray(sightings, dtype=np.int64),
            np.asarray(tracks, dtype=np.int64), np.asarray(sharp, dtype=np.float32),
        )  # fmt: skip

    def person_means(self) -> PersonMeans:
        """Every person's mean embedding from its stored sum: one row per person, no face read
        (a person whose sum was never computed gets it from its own faces first)."""
        with self._write() as conn:
            has_faces = exists().where(FacesTable.c.PersonId == PersonsTable.c.Id)
            unknown = list(
                conn.execute(
                    select(PersonsTable.c.Id).where(PersonsTable.c.EmbeddingCount.is_(None), has_faces)
                ).scalars()
            )
            if unknown:
                logger.info("computing the embedding sums of %d persons", len(unknown))
                recompute_person_sums(conn, unknown)
        query = (
            select(PersonsTable.c.Id, PersonsTable.c.EmbeddingSum, PersonsTable.c.EmbeddingCount)
            .where(PersonsTable.c.EmbeddingCount > 0)
            .order_by(PersonsTable.c.Id)
        )
        ids, sums, counts = [], [], []
        with self.engine.connect() as conn:
            for row in conn.execute(query.execution_options(yield_per=5000)):
                vector = _vector(row.EmbeddingSum)
                if vector is not None:
                    ids.append(row.Id)
                    sums.append(vector)
                    counts.append(row.EmbeddingCount)
        matrix = np.vstack(sums).astype(np.float64) if sums else np.zeros((0, EMBEDDING_DIM))
        person_ids, counts_of = np.asarray(ids, dtype=np.int64), np.asarray(counts, dtype=np.int64)
        return PersonMeans(person_ids, l2_normalize(matrix), counts_of)

    def persons_in_media_items(self, media_item_ids: Iterable[int]) -> set[tuple[int, int]]:
        """(sighting, person) pairs already taken in these media items (sightings as in
        FaceEmbeddings): a person appears once per photo, and once per frame of a video."""
        items = {int(m) for m in media_item_ids}
        pairs: set[tuple[int, int]] = set()
        with self.engine.connect() as conn:
            for part in chunks(sorted(items)):
                query = (
                    select(FacesTable.c.MediaItemId, _video_frame(), FacesTable.c.PersonId)
                    .join(MediaItemsTable, MediaItemsTable.c.Id == FacesTable.c.MediaItemId)
                    .where(FacesTable.c.MediaItemId.in_(part), FacesTable.c.PersonId.isnot(None))
                )
                pairs |= {
                    (sighting_key(r.MediaItemId, r.VideoFrame), r.PersonId) for r in conn.execute(query)
                }
        return pairs

    def rebuild_person_sums(self) -> int:
        """Every person's sum and count from its faces (after an upgrade, or to repair)."""
        with self._write() as conn:
            return recompute_person_sums(conn)

    def apply_person_changes(
        self,
        new_persons: Sequence[Sequence[int]],
        matches: Sequence[tuple[int, int, float]],
        noise: Iterable[int],
        regrouped: Sequence[tuple[int, int]] = (),
        library: FaceEmbeddings | None = None,
        deleted: list[int] | None = None,
    ) -> list[int]:
        """One transaction: create a person per face-id group; assign matched faces to existing
        persons (face id, person id, similarity); put regrouped faces (face id, person id) into
        existing persons as clustered; unassign noise faces and mark them seen by clustering;
        delete automatic persons left without a face (their ids appended to `deleted`, when
        given, for the run's summary). The persons' sums follow: from `library` (every embedded
        face, as a full clustering has read it) when given, else by shifting the sums of the
        persons the changed faces leave and join. Returns the new person ids, in the order of
        `new_persons`."""
        now = utcnow()
        created: list[int] = []
        noise = [int(f) for f in noise]
        changed = [int(f) for group in new_persons for f in group]
        changed += [int(f) for f, _, _ in matches] + [int(f) for f, _ in regrouped] + noise
        with self._write() as conn:
            with tracking_person_sums(conn, [] if library is not None else changed):
                for face_ids in new_persons:
                    person_id = insert_id(
                        conn,
                        insert(PersonsTable).values(
                            Type="cluster", CreatedAt=now, ModifiedAt=now, EmbeddingCount=0
                        ),
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
                for part in chunks(noise):
                    conn.execute(
                        update(FacesTable)
                        .where(FacesTable.c.Id.in_(part))
                        .values(PersonId=None, PersonAssignedBy="noise")
                    )
            if library is not None:
                self._write_library_sums(conn, library, regrouped, matches, noise)
            # Only persons this product made and nobody named: other applications' persons stay.
            has_faces = exists().where(FacesTable.c.PersonId == PersonsTable.c.Id)
            empty = (
                PersonsTable.c.Type == "cluster",
                or_(PersonsTable.c.IsUserNamed.is_(None), PersonsTable.c.IsUserNamed == false()),
                ~has_faces,
            )
            gone = list(conn.execute(select(PersonsTable.c.Id).where(*empty)).scalars())
            conn.execute(delete(PersonsTable).where(*empty))
        if deleted is not None:
            deleted.extend(int(p) for p in gone)
        return created

    @staticmethod
    def _write_library_sums(
        conn: Connection,
        library: FaceEmbeddings,
        regrouped: Sequence[tuple[int, int]],
        matches: Sequence[tuple[int, int, float]],
        noise: Sequence[int],
    ) -> None:
        """Every person's sum and count from the library in memory with the changes applied."""
        owner = library.person_ids.copy()
        row = {int(f): r for r, f in enumerate(library.face_ids)}
        for face, person in [*regrouped, *((f, p) for f, p, _ in matches), *((f, -1) for f in noise)]:
            if int(face) in row:
                owner[row[int(face)]] = person
        assigned = owner >= 0
        ids, dense, counts = np.unique(owner[assigned], return_inverse=True, return_counts=True)
        sums = group_sums(dense.astype(np.int64), library.vectors[assigned], len(ids)).astype(np.float64)
        known = set(conn.execute(select(PersonsTable.c.Id)).scalars())
        empty = sorted(known - set(ids.tolist()))
        rows = _sum_rows(ids, sums, counts) + _sum_rows(empty, [None] * len(empty), [0] * len(empty))
        for start in range(0, len(rows), 1000):
            conn.execute(_WRITE_SUM, rows[start : start + 1000])

    # portraits ----------------------------------------------------------------------------

    def portrait_candidates(
        self, person_ids: Sequence[int] | None = None, face_ids: Sequence[int] = (), with_vectors: bool = True
    ) -> list[PortraitCandidate]:
        """Assigned faces with what the portrait score needs: every assigned face (None), the
        faces of the given persons, and/or the given faces."""
        columns = [
            FacesTable.c.Id, FacesTable.c.PersonId, FacesTable.c.BoundingBox, FacesTable.c.Landmarks,
            FacesTable.c.Sharpness, MediaItemsTable.c.MediaFileId,
        ]  # fmt: skip
        if with_vectors:
            columns.append(FacesTable.c.Embedding)
        base = (
            select(*columns)
            .join(MediaItemsTable, MediaItemsTable.c.Id == FacesTable.c.MediaItemId)
            .where(FacesTable.c.PersonId.isnot(None), not_rejected())
        )
        terms: list[Any] = []
        if person_ids is None:
            terms.append(true())
        else:
            terms += [FacesTable.c.PersonId.in_(part) for part in chunks(person_ids)]
        terms += [FacesTable.c.Id.in_(part) for part in chunks(face_ids)]
        found: dict[int, PortraitCandidate] = {}
        with self.engine.connect() as conn:
            for term in terms:
                for r in conn.execute(base.where(term).execution_options(yield_per=5000)):
                    found[r.Id] = PortraitCandidate(
                        r.Id, r.PersonId, r.MediaFileId,
                        json.loads(r.BoundingBox) if r.BoundingBox else [0, 0, 0, 0],
                        json.loads(r.Landmarks) if r.Landmarks else [],
                        r.Sharpness,
                        _vector(r.Embedding) if with_vectors else None,
                    )  # fmt: skip
        return list(found.values())

    def portraits(self, person_ids: Sequence[int] | None = None) -> dict[int, tuple[int | None, int | None]]:
        """Person id -> (portrait face id, portrait media file id), for the given persons or all."""
        query = select(PersonsTable.c.Id, PersonsTable.c.PortraitFaceId, PersonsTable.c.PortraitMediaFileId)
        with self.engine.connect() as conn:
            if person_ids is None:
                rows = list(conn.execute(query))
            else:
                rows = [
                    r
                    for part in chunks(person_ids)
                    for r in conn.execute(query.where(PersonsTable.c.Id.in_(part)))
                ]
        return {r.Id: (r.PortraitFaceId, r.PortraitMediaFileId) for r in rows}

    def save_portraits(self, changes: Sequence[tuple[int, int, int]]) -> None:
        """(person id, face id, media file id) per new portrait, one transaction."""
        if not changes:
            return
        with self._write() as conn:
            conn.execute(
                update(PersonsTable).where(PersonsTable.c.Id == bindparam("person_id")),
                [{"person_id": p, "PortraitFaceId": f, "PortraitMediaFileId": m, "ModifiedAt": utcnow()}
                 for p, f, m in changes],
            )  # fmt: skip
