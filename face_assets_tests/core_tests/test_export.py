"""Export folders stay exactly in step with the persons, without growing copies."""

import os
from pathlib import Path

import pytest

from face_assets.core import correction
from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.export import MANIFEST, export_persons
from face_assets.core.person import update_persons
from face_assets.core.storage.store import FaceStore
from face_assets_tests.core_tests.synthetic import identities
from face_assets_tests.core_tests.test_correction import add_faces


@pytest.fixture
def library(tmp_path: Path, db_url: str) -> tuple[FaceStore, Path]:
    store = FaceStore.from_url(db_url, upgrade=True)
    vectors, _ = identities(seed=3, k=3, n=5)
    add_faces(store, tmp_path / "photos", vectors)
    update_persons(store, ClusterParams())
    return store, tmp_path


def expected_tree(store: FaceStore) -> dict[str, set[str]]:
    return {
        f"{p.name} ({p.id})": {f.path.name for f in correction.person_faces(store, p.id)}
        for p in correction.list_persons(store)
    }


def actual_tree(out: Path) -> dict[str, set[str]]:
    return {d.name: {f.name for f in d.iterdir()} for d in out.iterdir() if d.is_dir()}


def test_export_twice_then_after_a_merge_and_a_rename(library) -> None:
    store, tmp_path = library
    out = tmp_path / "export"
    first = export_persons(store, out)
    assert actual_tree(out) == expected_tree(store) and len(actual_tree(out)) == 3
    assert first.added == 15 and first.removed == 0
    some = next(p for d in out.iterdir() if d.is_dir() for p in d.iterdir())
    assert some.stat().st_nlink >= 2  # a hard link to the original, not a copy

    (out / "my notes.txt").write_text("mine")  # a file of the user's own is never touched
    again = export_persons(store, out)
    assert (again.added, again.removed, again.kept) == (0, 0, 15)

    persons = [p.id for p in correction.list_persons(store)]
    correction.merge_persons(store, persons[0], [persons[1]])
    correction.rename_person(store, persons[2], "Ada")
    merged = export_persons(store, out)

    assert actual_tree(out) == expected_tree(store) and len(actual_tree(out)) == 2
    assert merged.added == merged.removed == 10  # the moved photos and the renamed person's
    assert sum(len(files) for files in actual_tree(out).values()) == 15  # no growing copies
    assert (out / "my notes.txt").read_text() == "mine" and (out / MANIFEST).is_file()


def test_thumbnail_export_uses_the_thumbnail_files(library) -> None:
    store, tmp_path = library
    thumbnails = tmp_path / "thumbnails"
    faces = [f for p in correction.list_persons(store) for f in correction.person_faces(store, p.id)]
    for face in faces:
        (thumbnails / f"{face.id}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (thumbnails / f"{face.id}.jpg").write_bytes(b"jpeg")
    store.save_thumbnails([(f.id, f"{f.id}.jpg", f"{f.id}.jpg") for f in faces])
    out = tmp_path / "export"
    export_persons(store, out, thumbnails)
    exported = [p for d in out.iterdir() if d.is_dir() for p in d.iterdir()]
    assert len(exported) == len(faces)
    assert all(os.path.samefile(p, thumbnails / f"{p.stem.removeprefix('face-')}.jpg") for p in exported)
