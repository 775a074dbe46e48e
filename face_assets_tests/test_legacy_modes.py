"""The legacy service's modes on the `face-assets` command, each running the Dagster assets."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from face_assets.core.media_item import register_folder
from face_assets.core.storage.store import FaceStore
from face_assets.core.vision.types import DetectedFace
from face_assets_tests.conftest import BACKENDS, IDENTITIES, new_database_url
from face_assets_tests.test_cli import face_assets, run

# Each test runs the command line as processes one after another: minutes, not the fast lane's.
pytestmark = pytest.mark.slow
FACE = DetectedFace((20.0, 20.0, 120.0, 120.0), 0.99, ((60.0, 60.0),) * 5)


@pytest.fixture
def workdir(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Path]:
    """A working folder with its own data folder and Dagster home, and two sets of photos:
    5 per identity, then 2 more per identity: squares of colour on the stub models, what the
    modes do being the subject; real photos and models for the test on real photos. The database is
    the default SQLite file unless the test asks for a backend (indirect parametrisation)."""
    if "real_photos" in request.node.name:
        request.getfixturevalue("models_dir")
        people = request.getfixturevalue("celebrity_folder")
    else:
        request.getfixturevalue("stub_models")
        people = request.getfixturevalue("stub_people")
    first, second = tmp_path / "first", tmp_path / "second"
    for identity in IDENTITIES:
        for folder, photos in (
            (first, sorted((people / "train" / identity).glob("*.jpg"))[4:9]),
            (second, sorted((people / "val" / identity).glob("*.jpg"))[:2]),
        ):
            (folder / identity).mkdir(parents=True)
            for photo in photos:
                shutil.copy(photo, folder / identity / photo.name)
    (tmp_path / "dagster_home").mkdir()
    db = tmp_path / "data" / "face_assets.db"
    backend = getattr(request, "param", "sqlite")
    url = f"sqlite:///{db}" if backend == "sqlite" else new_database_url(request, backend, tmp_path)
    folders = {"root": tmp_path, "first": first, "second": second, "db": db, "url": url}
    if backend != "sqlite":
        cli(folders, "db", "init")  # a server database is set up once by its administrator
    return folders


def cli(workdir: dict[str, Path], *args: str):
    env = {"DAGSTER_HOME": str(workdir["root"] / "dagster_home"), "DATABASE_URL": str(workdir["url"])}
    out = run(face_assets(*args), workdir["root"], **env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def store_of(workdir: dict[str, Path]) -> FaceStore:
    return FaceStore.from_url(str(workdir["url"]))


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file below `folder` with its content hash: byte-for-byte comparison."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("workdir", BACKENDS, indirect=True)
def test_detect_then_recognize_then_recluster(workdir) -> None:
    store = store_of(workdir)
    register_folder(store, workdir["first"])  # rows as another application would add them

    cli(workdir, "detect")
    counts = store.counts()
    assert counts["media_items_pending"] == 0 and counts["faces"] > 0
    assert counts["faces_embedded"] == 0 and counts["persons"] == 0
    assert len(list((workdir["root"] / "data" / "thumbnails").rglob("*.jpg"))) == counts["faces"]

    cli(workdir, "recognize")
    counts = store.counts()
    assert counts["faces_embedded"] == counts["faces"] and counts["persons"] == len(IDENTITIES)

    assert "changed nothing" in cli(workdir, "recluster")


def test_a_recluster_reports_its_own_changes_not_those_of_a_run_beside_it(workdir) -> None:
    cli(workdir, "all", str(workdir["first"]))
    env = {"DAGSTER_HOME": str(workdir["root"] / "dagster_home"), "DATABASE_URL": str(workdir["url"])}
    beside = FaceStore.from_url(str(workdir["url"]))
    photos = sorted(workdir["second"].rglob("*.jpg"))
    environment = {**os.environ, **env}
    command = subprocess.Popen(
        face_assets("recluster"), cwd=workdir["root"], env=environment, stdout=subprocess.PIPE, text=True
    )
    # Another run registers and detects photos all the while the clustering runs.
    while command.poll() is None and photos:
        photo = photos.pop()
        item = beside.register_media_file(photo, "JPEG", photo.stat().st_size)
        assert item is not None and beside.save_detection(item, [FACE], "stub", (250, 250))
        time.sleep(0.2)
    out, _ = command.communicate()
    assert command.returncode == 0
    assert len(photos) < len(list(workdir["second"].rglob("*.jpg")))  # written while it ran
    assert "changed nothing" in out and "registered" not in out and "detected" not in out


def test_all_runs_the_full_pipeline_once(workdir) -> None:
    out = cli(workdir, "all", str(workdir["first"]))
    counts = store_of(workdir).counts()
    assert counts["media_items"] == 5 * len(IDENTITIES) and counts["media_items_pending"] == 0
    assert counts["persons"] == len(IDENTITIES)
    assert "images/s" in out


def test_watch_detects_new_rows_every_cycle(workdir) -> None:
    store = store_of(workdir)
    register_folder(store, workdir["first"])
    out = cli(workdir, "watch", "--interval", "0.2", "--cycles", "2")
    assert "[cycle 1]" in out and "[cycle 2]" in out
    assert store.counts()["media_items_pending"] == 0


def test_automate_runs_the_full_pipeline_every_cycle(workdir) -> None:
    out = cli(workdir, "automate", str(workdir["first"]), "--interval", "0.2", "--cycles", "2")
    assert out.count("[cycle") == 2
    counts = store_of(workdir).counts()
    assert counts["persons"] == len(IDENTITIES) and counts["media_items_pending"] == 0


def test_dry_run_writes_nothing_at_all(workdir) -> None:
    cli(workdir, "all", str(workdir["first"]))
    store = store_of(workdir)
    register_folder(store, workdir["second"])  # pending work the dry runs could do
    store.dispose()  # our own connection closed: no WAL file left beside the database
    root = workdir["root"]
    before = {name: tree_digest(root / name) for name in ("data", "dagster_home")}

    out = cli(workdir, "--dry-run", "all", str(workdir["second"]))
    assert "would have" in out and "faces detected +" in out
    for mode in ("detect", "recognize", "recluster"):
        assert "dry run" in cli(workdir, "--dry-run", mode)
    image = next((workdir["second"] / IDENTITIES[0]).glob("*.jpg"))
    cli(workdir, "--dry-run", "test", str(image), "--out", "thumbs")

    assert {name: tree_digest(root / name) for name in ("data", "dagster_home")} == before
    assert not (root / "thumbs").exists()


@pytest.mark.parametrize("workdir", BACKENDS, indirect=True)
def test_corrections_on_real_photos_survive_both_recluster_modes(workdir) -> None:
    cli(workdir, "all", str(workdir["first"]))
    listing = cli(workdir, "persons", "list").splitlines()[1:]
    ids = [int(line.split()[0]) for line in listing]
    assert len(ids) == len(IDENTITIES)

    assert "is now 'Ada'" in cli(workdir, "persons", "rename", str(ids[0]), "Ada")
    shown = cli(workdir, "persons", "show", str(ids[1])).splitlines()
    faces = [int(line.split()[1].rstrip(":")) for line in shown]
    cli(workdir, "faces", "reject", str(faces[0]))
    split_to = int(cli(workdir, "persons", "split", str(ids[1]), str(faces[1])).split()[-1])
    cli(workdir, "persons", "merge", str(ids[0]), str(ids[2]))
    cli(workdir, "faces", "move", str(faces[2]), str(ids[0]))
    forgotten = [
        int(line.split()[1].rstrip(":"))
        for line in cli(workdir, "persons", "show", str(split_to)).splitlines()
    ]
    cli(workdir, "persons", "forget", str(split_to))
    store = store_of(workdir)
    expected = persons_with_faces(store)
    assert set(expected) == {ids[0], ids[1]} and faces[2] in expected[ids[0]]
    assert not set(forgotten) & set(store.face_embeddings().face_ids.tolist())

    for mode in (["recluster"], ["recluster", "--rebuild"], ["recognize"], ["recluster"]):
        cli(workdir, *mode)
        assert persons_with_faces(store) == expected, mode
    assert not set(forgotten) & set(store.face_embeddings().face_ids.tolist())  # never re-embedded
    assert "Ada" in cli(workdir, "persons", "list")
    out = run(
        face_assets("persons", "rename", "999", "Nobody"), workdir["root"], DATABASE_URL=str(workdir["url"])
    )
    assert out.returncode == 2 and "no person with Id 999" in out.stderr and "Traceback" not in out.stderr


def persons_with_faces(store: FaceStore) -> dict[int, set[int]]:
    from face_assets.core import correction

    return {
        p.id: {f.id for f in correction.person_faces(store, p.id)} for p in correction.list_persons(store)
    }
