"""Export folders stay exactly in step with the persons, without growing copies, and never
lose or overwrite a file: not the user's own, not the last copy of a photo."""

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from face_assets.core import correction
from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.export import MANIFEST, ExportFolderError, export_persons
from face_assets.core.person import update_persons
from face_assets.core.storage.store import FaceStore
from face_assets_tests.conftest import mounted
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
    assert (again.added, again.removed, again.unchanged) == (0, 0, 15)

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


# The export is file work: one database backend is enough.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def first_photo(store: FaceStore) -> tuple[int, str, Path]:
    """A person's Id, its folder name and one of its originals."""
    person = correction.list_persons(store)[0]
    return person.id, f"{person.name} ({person.id})", correction.person_faces(store, person.id)[0].path


@sqlite_only
def test_the_last_copy_of_a_deleted_original_is_kept_and_follows_its_renamed_person(library) -> None:
    store, tmp_path = library
    out = tmp_path / "export"
    person_id, folder, original = first_photo(store)
    Image.new("RGB", (24, 24), (200, 30, 30)).save(original)  # bytes no other photo has
    photo = original.read_bytes()
    export_persons(store, out)
    original.unlink()  # deleted (or moved) by the user: the export's link is the last copy
    correction.rename_person(store, person_id, "Ada")
    renamed = export_persons(store, out)

    kept = out / f"Ada ({person_id})" / original.name
    assert kept.read_bytes() == photo
    assert (renamed.moved, renamed.kept) == (1, 0) and not (out / folder).exists()
    assert renamed.notes == (
        f"kept: {kept}: its original {original} is missing (moved from {out / folder / original.name})",
    )
    again = export_persons(store, out)  # still in the manifest: kept, and said again
    assert (again.kept, again.removed, again.added) == (1, 0, 0) and kept.read_bytes() == photo
    assert again.notes == (f"kept: {kept}: its original {original} is missing",)

    correction.forget_person(store, person_id, tmp_path / "thumbnails")  # now in no person
    forgotten = export_persons(store, out)
    assert kept.read_bytes() == photo and forgotten.kept == 1
    assert [p.name for p in kept.parent.iterdir()] == [original.name]  # the others' links went


@sqlite_only
def test_a_file_of_the_users_at_an_exported_path_is_never_replaced(library) -> None:
    store, tmp_path = library
    out = tmp_path / "export"
    person_id, folder, original = first_photo(store)
    mine = out / folder / original.name
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's own photo")

    first = export_persons(store, out)
    assert mine.read_bytes() == b"the user's own photo"
    beside = mine.with_name(f"{original.stem} (2){original.suffix}")
    assert os.path.samefile(beside, original)
    assert (first.added, first.renamed) == (15, 1)
    assert first.notes == (f"renamed: {beside}: a file the export did not write is at {mine}",)
    again = export_persons(store, out)
    assert (again.added, again.removed, again.unchanged) == (0, 0, 15)

    correction.rename_person(store, person_id, "Ada")
    export_persons(store, out)
    assert mine.read_bytes() == b"the user's own photo" and list(mine.parent.iterdir()) == [mine]
    assert os.path.samefile(out / f"Ada ({person_id})" / original.name, original)


@sqlite_only
def test_an_exported_file_the_user_changed_is_not_removed(library) -> None:
    store, tmp_path = library
    thumbnails = tmp_path / "thumbnails"
    faces = [f for p in correction.list_persons(store) for f in correction.person_faces(store, p.id)]
    store.save_thumbnails([(f.id, f"{f.id}.jpg", f"{f.id}.jpg") for f in faces])  # grey tiles
    out = tmp_path / "export"
    export_persons(store, out, montages_from=thumbnails)
    person_id, folder, original = first_photo(store)
    edited = out / folder / original.name
    edited.unlink()
    edited.write_bytes(b"retouched")  # an editor writes a new file in the link's place
    montage = out / "montages" / f"{folder}.jpg"
    montage.write_bytes(b"annotated")
    correction.rename_person(store, person_id, "Ada")
    change = export_persons(store, out, montages_from=thumbnails)

    assert edited.read_bytes() == b"retouched" and montage.read_bytes() == b"annotated"
    assert change.kept == 2
    assert f"kept: {edited}: it differs from its original {original}; left as yours" in change.notes
    assert os.path.samefile(out / f"Ada ({person_id})" / original.name, original)
    assert (out / "montages" / f"Ada ({person_id}).jpg").is_file()
    again = export_persons(store, out, montages_from=thumbnails)  # the user's files now: not counted
    assert (again.kept, again.added, again.removed) == (0, 0, 0) and edited.read_bytes() == b"retouched"


@sqlite_only
def test_another_exports_partial_manifest_is_left_alone(library) -> None:
    store, tmp_path = library
    out = tmp_path / "export"
    out.mkdir()
    other = out / ".face-assets-export.tmp"  # the one name every export used to write to
    other.write_text("another export's manifest, half written")
    export_persons(store, out)
    assert other.read_text() == "another export's manifest, half written"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == sorted([MANIFEST, other.name])


@sqlite_only
def test_a_manifest_of_the_first_format_is_taken_up(library) -> None:
    store, tmp_path = library
    out = tmp_path / "export"
    export_persons(store, out)
    files = json.loads((out / MANIFEST).read_text())["files"]
    (out / MANIFEST).write_text(json.dumps({path: entry["record"] for path, entry in files.items()}))
    again = export_persons(store, out)
    assert (again.added, again.removed, again.unchanged, again.renamed) == (0, 0, 15, 0)


@pytest.fixture
def other_file_system(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs, where no hard link reaches the photos: the export copies (root only)."""
    with mounted(tmp_path / "tmpfs", "-t", "tmpfs", "-o", "size=16m", "tmpfs") as folder:
        yield folder


@sqlite_only
def test_a_copy_the_user_edited_is_kept_even_with_its_size_and_time(library, other_file_system) -> None:
    store, _ = library
    out = other_file_system / "export"
    export_persons(store, out)
    person_id, folder, original = first_photo(store)
    faces = len(correction.person_faces(store, person_id))
    copy = out / folder / original.name
    assert copy.stat().st_nlink == 1 and copy.read_bytes() == original.read_bytes()
    edited = bytes(b ^ 0xFF for b in original.read_bytes())
    copied = copy.stat()
    copy.write_bytes(edited)
    os.utime(copy, ns=(copied.st_atime_ns, copied.st_mtime_ns))  # as the copy's, as the original's
    correction.rename_person(store, person_id, "Ada")
    change = export_persons(store, out)

    assert copy.read_bytes() == edited
    assert (change.kept, change.removed, change.added) == (1, faces - 1, faces)
    assert (out / f"Ada ({person_id})" / original.name).read_bytes() == original.read_bytes()


@sqlite_only
def test_an_unreadable_manifest_stops_the_export_before_any_change(library) -> None:
    store, tmp_path = library
    out = tmp_path / "export"
    export_persons(store, out)
    (out / MANIFEST).write_text('{"Person 1 (1)/0000.png": ')  # cut short
    before = {p: p.stat().st_ino for p in out.rglob("*")}
    with pytest.raises(ExportFolderError, match="cannot be read as an export manifest"):
        export_persons(store, out)
    assert {p: p.stat().st_ino for p in out.rglob("*")} == before
