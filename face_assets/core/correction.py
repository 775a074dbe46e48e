"""A user's corrections to persons: rename, merge, split, move, reject, forget.

Each correction is one transaction under the persons lock, and is stored so that every later
automatic step respects it: faces a user placed carry PersonAssignedBy = "user" and are never
moved by matching or clustering; rejected faces are left out of every automatic step; a name a
user gave is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from face_assets.core.person import PERSONS_LOCK, default_owner
from face_assets.core.storage.corrections import USER, FaceRow, PersonRow
from face_assets.core.storage.errors import CorrectionError
from face_assets.core.storage.schema import PersonsTable
from face_assets.core.storage.store import FaceStore

__all__ = [
    "USER", "CorrectionError", "FaceRow", "PersonRow", "forget_person", "list_persons", "merge_persons",
    "move_face", "person_faces", "reject_face", "rename_person", "split_person",
]  # fmt: skip

logger = logging.getLogger(__name__)

# Corrections wait for a running clustering instead of failing.
LOCK_WAIT_S = 120.0
NAME_MAX = PersonsTable.c.Name.type.length  # type: ignore[attr-defined]


def _locked(store: FaceStore) -> AbstractContextManager[None]:
    return store.lock(PERSONS_LOCK, default_owner(), wait_seconds=LOCK_WAIT_S)


def list_persons(store: FaceStore) -> list[PersonRow]:
    return store.list_persons()


def person_faces(store: FaceStore, person_id: int) -> list[FaceRow]:
    return store.faces_by_person(person_id)[person_id]


def rename_person(store: FaceStore, person_id: int, name: str) -> None:
    name = name.strip()
    if not name:
        raise CorrectionError("a person's name cannot be empty")
    if len(name) > NAME_MAX:
        # A cut name could collide with another person's: refuse it instead.
        raise CorrectionError(
            f"a person's name holds at most {NAME_MAX} characters, this one has {len(name)}"
        )
    with _locked(store):
        store.rename_person(person_id, name)


def merge_persons(store: FaceStore, target_id: int, source_ids: Sequence[int]) -> int:
    """Moves every face of the sources to the target and deletes the sources; returns faces moved.
    The target keeps its name, or takes a source's user-given name if it has none."""
    sources = [s for s in dict.fromkeys(source_ids) if s != target_id]
    if not sources:
        raise CorrectionError("merge needs at least one other person")
    with _locked(store):
        return store.merge_persons(target_id, sources)


def split_person(store: FaceStore, person_id: int, face_ids: Sequence[int]) -> int:
    """Moves the given faces of a person to a new person; returns the new person's Id."""
    with _locked(store):
        return store.split_person(person_id, face_ids)


def move_face(store: FaceStore, face_id: int, person_id: int, force: bool = False) -> None:
    with _locked(store):
        store.move_face(face_id, person_id, force=force)


def reject_face(store: FaceStore, face_id: int) -> None:
    """Not a face, or a stranger: kept out of every person and every automatic step."""
    with _locked(store):
        store.reject_face(face_id)


def forget_person(store: FaceStore, person_id: int, thumbnail_dir: Path) -> int:
    """Privacy: deletes the person, its faces' embeddings and thumbnail files, and the links.
    The faces stay as rejected boxes so that no automatic step recreates them; returns their count."""
    with _locked(store):
        thumbnails = store.forget_person(person_id)
    # Files go once the rows no longer point at them; a crash in between leaves orphan files,
    # never rows pointing at missing files.
    for thumbnail in thumbnails:
        if thumbnail:
            (thumbnail_dir / thumbnail).unlink(missing_ok=True)
    logger.info("forgot person %d: %d faces", person_id, len(thumbnails))
    return len(thumbnails)
