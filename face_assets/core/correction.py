"""A user's corrections to persons: rename, merge, split, move, reject, forget.

Each correction is one transaction under the persons lock, and is stored so that every later
automatic step respects it: faces a user placed carry PersonAssignedBy = "user" and are never
moved by matching or clustering; rejected faces are left out of every automatic step; a name a
user gave is kept. A correction to one face of a video track applies to the whole track, and
says so in what it returns.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from face_assets.core.person import PERSONS_LOCK, default_owner
from face_assets.core.storage.corrections import USER, FaceRow, ForgottenFaces, MovedFaces, PersonRow
from face_assets.core.storage.errors import CorrectionError
from face_assets.core.storage.schema import PersonsTable
from face_assets.core.storage.store import FaceStore

__all__ = [
    "USER", "CorrectionError", "FaceRow", "ForgottenFaces", "MovedFaces", "PersonRow", "forget_person",
    "list_persons", "merge_persons", "move_face", "person_faces", "reject_face", "rename_person",
    "split_person",
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


def _breaks_the_line(char: str) -> bool:
    """A control character (newline, tab, NUL...) or a line or paragraph separator: a name is
    one line, in `persons list`, the gallery and export folder names alike."""
    return unicodedata.category(char) in ("Cc", "Zl", "Zp")


def rename_person(store: FaceStore, person_id: int, name: str) -> str:
    """Names the person: one line, surrounding whitespace trimmed, unique regardless of case.
    Returns the name as stored."""
    name = name.strip()
    if not name:
        raise CorrectionError("a person's name cannot be empty")
    bad = next((char for char in name if _breaks_the_line(char)), None)
    if bad is not None:
        raise CorrectionError(
            f"a person's name is one line: {name!r} holds the control character or line break "
            f"U+{ord(bad):04X}"
        )
    if len(name) > NAME_MAX:
        # A cut name could collide with another person's: refuse it instead.
        raise CorrectionError(
            f"a person's name holds at most {NAME_MAX} characters, this one has {len(name)}"
        )
    with _locked(store):
        store.rename_person(person_id, name)
    return name


def merge_persons(store: FaceStore, target_id: int, source_ids: Sequence[int]) -> int:
    """Moves every face of the sources to the target and deletes the sources; returns faces moved.
    The target keeps its name, or takes a source's user-given name if it has none. An Id given
    twice, or the target among the sources, is refused rather than guessed at: it may be a typo
    for the person that should have been merged."""
    sources = list(source_ids)
    if target_id in sources:
        raise CorrectionError(
            f"person {target_id} is the one the others are merged into: it cannot be merged into itself; "
            "give its Id once, first"
        )
    twice = next((s for s in sources if sources.count(s) > 1), None)
    if twice is not None:
        raise CorrectionError(f"person {twice} is given twice; give each person to merge once")
    if not sources:
        raise CorrectionError("merge needs at least one other person")
    with _locked(store):
        return store.merge_persons(target_id, sources)


def split_person(store: FaceStore, person_id: int, face_ids: Sequence[int]) -> MovedFaces:
    """Moves the given faces of a person, and the other faces of their video tracks, to a new
    person; returns what moved, with the new person's Id."""
    with _locked(store):
        return store.split_person(person_id, face_ids)


def move_face(store: FaceStore, face_id: int, person_id: int, force: bool = False) -> MovedFaces:
    """Puts the face, and the other faces of its video track, into the person; returns what moved.
    A forgotten face is refused: it stays erased."""
    with _locked(store):
        return store.move_face(face_id, person_id, force=force)


def reject_face(store: FaceStore, face_id: int) -> MovedFaces:
    """Not a face, or a stranger: kept out of every person and every automatic step, with the
    other faces of its video track; returns what was rejected."""
    with _locked(store):
        return store.reject_face(face_id)


def forget_person(store: FaceStore, person_id: int, thumbnail_dir: Path) -> ForgottenFaces:
    """Privacy: deletes the person and erases every face ever linked to it (its faces and those
    rejected from it): embeddings, thumbnail files and links. The faces stay as forgotten boxes
    so that no automatic step recreates them; returns them."""
    with _locked(store):
        forgotten = store.forget_person(person_id)
    # Files go once the rows no longer point at them; a crash in between leaves orphan files,
    # never rows pointing at missing files.
    for thumbnail in forgotten.thumbnails:
        (thumbnail_dir / thumbnail).unlink(missing_ok=True)
    logger.info("forgot person %d: %d faces", person_id, len(forgotten.face_ids))
    return forgotten
