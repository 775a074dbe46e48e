"""Media items know their content: a replaced file is processed again, an identical copy is one
media item with two paths, a file that is gone is reported and keeps its faces."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from face_assets.cli import main
from face_assets.core import correction
from face_assets.core.media_item import register_folder
from face_assets.core.storage.schema import FacesTable, PersonsTable
from face_assets.core.storage.store import FaceStore
from face_assets.core.vision.types import DetectedFace
from face_assets_tests.core_tests.synthetic import unit

FACE = DetectedFace(box_xyxy=(10.0, 10.0, 50.0, 60.0), score=0.99, landmarks=((20.0, 30.0),) * 5)


def _photo(path: Path, seed: int) -> Path:
    """A real PNG whose pixels (and so bytes) differ by seed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def store(db_url: str) -> FaceStore:
    store = FaceStore.from_url(db_url, upgrade=True)
    yield store
    store.dispose()


def _detected_with_person(store: FaceStore, item: int, thumbnails: Path) -> tuple[int, int]:
    """The item processed: one embedded face with a thumbnail file, in a person of its own."""
    relative = f"ab/face-{item}.jpg"
    (thumbnails / "ab").mkdir(parents=True, exist_ok=True)
    (thumbnails / relative).write_bytes(b"thumbnail")
    assert store.save_detection(item, [FACE], "test", (80, 60), thumbnails=[(relative, 1.0)])
    face = store.faces_without_embedding((item, item))[0].id
    store.save_embeddings([face], unit(np.ones((1, 512), dtype=np.float32)), "synthetic")
    with store.engine.begin() as conn:
        person = conn.execute(
            PersonsTable.insert().values(Name="Kofi", EmbeddingCount=0)
        ).inserted_primary_key[0]
    correction.move_face(store, face, int(person))
    return face, int(person)


def _person_count(store: FaceStore, person: int) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                select(PersonsTable.c.EmbeddingCount).where(PersonsTable.c.Id == person)
            ).scalar_one()
        )


def test_a_file_replaced_under_the_same_name_is_processed_again(store: FaceStore, tmp_path: Path) -> None:
    library, thumbnails = tmp_path / "library", tmp_path / "thumbnails"
    photo = _photo(library / "party.png", seed=1)
    item = register_folder(store, library, thumbnails).added[0]
    _, person = _detected_with_person(store, item, thumbnails)
    assert _person_count(store, person) == 1

    _photo(photo, seed=2)  # another picture under the same name, the same size
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 5_000_000_000))
    again = register_folder(store, library, thumbnails)

    assert again.replaced == [(photo, item)] and again.retired_faces == 1 and not again.added
    assert [i.id for i in store.pending_media_items()] == [item], "the new content waits for detection"
    with store.engine.connect() as conn:
        assert conn.execute(select(FacesTable.c.Id).where(FacesTable.c.MediaItemId == item)).first() is None
    assert not (thumbnails / f"ab/face-{item}.jpg").exists(), "the old face's thumbnail is left behind"
    assert _person_count(store, person) == 0, "the person still counts the face of the old picture"
    # A third scan changes nothing.
    third = register_folder(store, library, thumbnails)
    assert not third.replaced and not third.added and third.already_known == 1


def test_a_file_only_touched_keeps_its_faces(store: FaceStore, tmp_path: Path) -> None:
    library, thumbnails = tmp_path / "library", tmp_path / "thumbnails"
    photo = _photo(library / "party.png", seed=1)
    item = register_folder(store, library, thumbnails).added[0]
    _detected_with_person(store, item, thumbnails)

    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 5_000_000_000))
    again = register_folder(store, library, thumbnails)

    assert not again.replaced and again.already_known == 1
    assert not store.pending_media_items()
    assert (thumbnails / f"ab/face-{item}.jpg").exists()


def test_an_identical_copy_is_one_media_item_with_both_paths(store: FaceStore, tmp_path: Path) -> None:
    library = tmp_path / "library"
    original = _photo(library / "2003" / "party.png", seed=1)
    copy = library / "backup" / "party-copy.png"
    copy.parent.mkdir()
    shutil.copy2(original, copy)
    _photo(library / "2003" / "other.png", seed=3)

    result = register_folder(store, library)

    assert len(result.added) == 2, "the copy became a media item of its own"
    assert [path for path, _ in result.copies] == [copy]
    item = result.copies[0][1]
    assert {i.id: i.path for i in store.pending_media_items()}[item] == original.resolve()
    assert store.copies_of_media_items([item]) == {item: [copy.resolve()]}


def test_a_deleted_original_is_reported_and_keeps_its_person(store: FaceStore, tmp_path: Path) -> None:
    library, thumbnails = tmp_path / "library", tmp_path / "thumbnails"
    photo = _photo(library / "party.png", seed=1)
    item = register_folder(store, library, thumbnails).added[0]
    _, person = _detected_with_person(store, item, thumbnails)

    photo.unlink()
    scan = register_folder(store, library, thumbnails)

    assert scan.missing == [photo.resolve()]
    missing = store.missing_files()
    assert [(m.media_item_id, m.path) for m in missing] == [(item, photo.resolve())]
    assert _person_count(store, person) == 1, "a missing file must not cost the person its face"
    assert register_folder(store, library, thumbnails).missing == [], "reported once, not on every scan"

    _photo(photo, seed=1)  # put back
    back = register_folder(store, library, thumbnails)
    assert back.back == 1 and not back.replaced and store.missing_files() == []


def test_a_deleted_original_with_a_copy_moves_to_the_copy(store: FaceStore, tmp_path: Path) -> None:
    library, thumbnails = tmp_path / "library", tmp_path / "thumbnails"
    original = _photo(library / "a" / "party.png", seed=1)
    item = register_folder(store, library, thumbnails).added[0]
    _detected_with_person(store, item, thumbnails)
    copy = library / "b" / "party.png"
    copy.parent.mkdir()
    shutil.copy2(original, copy)
    assert register_folder(store, library, thumbnails).copies == [(copy, item)]

    original.unlink()
    register_folder(store, library, thumbnails)

    faces = store.faces_by_person()
    assert [f.path for fs in faces.values() for f in fs] == [copy.resolve()], "the faces lost their file"
    assert store.missing_files()[0].media_item_id is None, "the copy, not the missing file, holds the item"


def test_a_replaced_original_with_a_copy_keeps_its_faces_there(store: FaceStore, tmp_path: Path) -> None:
    library, thumbnails = tmp_path / "library", tmp_path / "thumbnails"
    original = _photo(library / "a" / "party.png", seed=1)
    copy = library / "b" / "party.png"
    copy.parent.mkdir(parents=True)
    shutil.copy2(original, copy)
    first = register_folder(store, library, thumbnails)
    item = first.added[0]
    _, person = _detected_with_person(store, item, thumbnails)

    _photo(original, seed=5)
    os.utime(original, ns=(original.stat().st_atime_ns, original.stat().st_mtime_ns + 5_000_000_000))
    again = register_folder(store, library, thumbnails)

    assert _person_count(store, person) == 1, "the copy still shows the person"
    assert [f.path for f in store.faces_by_person()[person]] == [copy.resolve()]
    ((path, new_item),) = again.replaced
    assert path == original and new_item != item
    assert [i.id for i in store.pending_media_items()] == [new_item]


def test_the_command_line_lists_both_paths_of_a_copy_and_every_missing_file(
    store: FaceStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    library, thumbnails = tmp_path / "library", tmp_path / "thumbnails"
    original = _photo(library / "a" / "party.png", seed=1)
    gone = _photo(library / "a" / "zoo.png", seed=2)
    item = register_folder(store, library, thumbnails).added[0]
    _, person = _detected_with_person(store, item, thumbnails)
    copy = library / "b" / "party.png"
    copy.parent.mkdir()
    shutil.copy2(original, copy)
    gone.unlink()
    register_folder(store, library, thumbnails)
    monkeypatch.setenv("DATABASE_URL", store.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("FACE_ASSETS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    assert main(["persons", "show", str(person)]) == 0
    shown = capsys.readouterr().out
    assert str(original.resolve()) in shown and f"the same file at {copy.resolve()}" in shown
    assert main(["errors"]) == 0
    listed = capsys.readouterr().out
    assert "missing since" in listed and str(gone.resolve()) in listed
    assert "0 media items with an error, 1 files missing" in listed
