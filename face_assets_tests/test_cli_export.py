"""`face-assets export` as a user runs it: a folder it cannot use ends in one line and exit 2,
and the summary counts what it kept and moved, each file named."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from face_assets.cli import main
from face_assets.core import correction
from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.person import update_persons
from face_assets.core.storage.store import FaceStore
from face_assets_tests.conftest import mounted
from face_assets_tests.core_tests.synthetic import identities
from face_assets_tests.core_tests.test_correction import add_faces


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FaceStore:
    """Three persons of five photos in a SQLite file, which the command finds by DATABASE_URL."""
    url = f"sqlite:///{tmp_path / 'faces.db'}"
    store = FaceStore.from_url(url, upgrade=True)
    vectors, _ = identities(seed=3, k=3, n=5)
    add_faces(store, tmp_path / "photos", vectors)
    update_persons(store, ClusterParams())
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("FACE_ASSETS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return store


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder on a read-only file system: a read-only bind mount of itself (root only)."""
    folder = tmp_path / "read-only"
    with mounted(folder, "-o", "bind,ro", str(folder)) as mount:
        yield mount


@pytest.mark.parametrize("case", ["empty name", "a file", "under a file", "read-only"])
def test_a_folder_export_cannot_use_ends_in_one_line_and_exit_2(
    case: str,
    store: FaceStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    if case == "empty name":  # not the current folder
        folder, cause = "", "export folder '': an empty name"
    elif case == "a file":
        folder, cause = str(tmp_path / "notes.txt"), "a file is there, not a folder"
    elif case == "under a file":
        folder, cause = (
            str(tmp_path / "notes.txt" / "out"),
            f"{tmp_path / 'notes.txt'} is a file, not a folder",
        )
    else:
        folder, cause = str(request.getfixturevalue("read_only_folder")), "Read-only file system"
    before = sorted(tmp_path.rglob("*"))

    code = main(["export", folder])

    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith(f"error: export folder {folder}") and cause in line
    assert sorted(tmp_path.rglob("*")) == before and (tmp_path / "notes.txt").read_text() == "mine"


def test_the_summary_counts_the_last_copy_it_kept_and_names_it(
    store: FaceStore, capsys: pytest.CaptureFixture[str]
) -> None:
    person = correction.list_persons(store)[0]
    faces = len(correction.person_faces(store, person.id))
    original = correction.person_faces(store, person.id)[0].path
    assert main(["export", "out"]) == 0
    original.unlink()
    correction.rename_person(store, person.id, "Ada")
    capsys.readouterr()

    assert main(["export", "out"]) == 0

    shown = capsys.readouterr()
    kept = Path("out") / f"Ada ({person.id})" / original.name
    was = Path("out") / f"{person.name} ({person.id})" / original.name
    assert shown.err.splitlines() == [f"kept: {kept}: its original {original} is missing (moved from {was})"]
    assert shown.out.splitlines() == [
        f"out: {faces - 1} added, {faces - 1} removed, {15 - faces} unchanged, 0 kept, 1 moved, 0 renamed"
    ]
    assert kept.is_file()
