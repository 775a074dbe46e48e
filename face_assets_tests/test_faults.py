"""Faults a user meets on the command line: each ends in lines naming the file or setting and
the cause, exit 2 where nothing could be done, and no secret kept anywhere. The stub models
stand in for the real ones: what is tested is everything around them (the demo excepted)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from subprocess import DEVNULL
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from face_assets.cli import build_parser
from face_assets.core.storage.store import FaceStore
from face_assets_devtools.servers import PASSWORD
from face_assets_devtools.stub_people import make_stub_people
from face_assets_tests.conftest import IDENTITIES, new_database_url
from face_assets_tests.core_tests.test_bad_files import mounted_tmpfs, write_png_bomb
from face_assets_tests.test_cli import face_assets, run


def _small_library(root: Path, photo_folder: Path) -> Path:
    library = root / "library"
    for identity in IDENTITIES[:2]:
        shutil.copytree(photo_folder / identity, library / identity)
    return library


def _dagster_home(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A DAGSTER_HOME with the dagster.yaml the README tells users to copy there."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(Path(__file__).parents[1] / "dagster.yaml", home / "dagster.yaml")
    return home, {"DAGSTER_HOME": str(home)}


def _texts(blob: bytes) -> list[bytes]:
    """A stored value as written, and decompressed when Dagster compressed it."""
    found = [blob]
    try:
        found.append(zlib.decompress(blob))
    except zlib.error:
        pass
    return found


def _stored_values(database: Path) -> list[bytes]:
    """Every text and blob value of every table of a SQLite file."""
    conn = sqlite3.connect(database)
    values: list[bytes] = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        for row in conn.execute(f'SELECT * FROM "{table}"'):
            for value in row:
                if isinstance(value, str):
                    values.append(value.encode())
                elif isinstance(value, bytes):
                    values += _texts(value)
    conn.close()
    return values


@pytest.mark.parametrize("backend", ["postgresql", pytest.param("mariadb", marks=pytest.mark.slow)])
def test_no_database_password_is_kept_under_dagster_home(
    request: pytest.FixtureRequest, tmp_path: Path, stub_photo_folder: Path, stub_models: None, backend: str
) -> None:
    url = new_database_url(request, backend, tmp_path)
    assert PASSWORD in url
    home, env = _dagster_home(tmp_path)
    env["DATABASE_URL"] = url
    assert run(face_assets("db", "init"), tmp_path, **env).returncode == 0
    out = run(face_assets("all", str(_small_library(tmp_path, stub_photo_folder))), tmp_path, **env)
    assert out.returncode == 0, out.stderr[-3000:]

    secret = PASSWORD.encode()
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)  # the runs and events were recorded here
    for path in files:
        for text in _texts(path.read_bytes()):
            assert secret not in text, path
        if path.suffix == ".db":
            for value in _stored_values(path):
                assert secret not in value, path
    assert PASSWORD not in out.stdout + out.stderr


def test_the_common_flags_go_before_or_after_the_command() -> None:
    parser = build_parser()
    for before, after in (
        (["--dry-run", "all", "photos"], ["all", "photos", "--dry-run"]),
        (["-v", "recluster", "--rebuild"], ["recluster", "--rebuild", "-v"]),
        (["-v", "persons", "list"], ["persons", "list", "-v"]),
    ):
        assert vars(parser.parse_args(before)) == vars(parser.parse_args(after))
    flags = parser.parse_args(["-v", "all", "--dry-run"])
    assert flags.verbose and flags.dry_run  # one given on each side: both kept


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("foo://bar", "knows no database 'foo'"),
        ("not a url at all", "is not a database URL"),
        ("mysql+pymysql://user:s3cret@db.example/faces", "pip install pymysql"),
    ],
)
def test_a_malformed_database_url_is_one_line(tmp_path: Path, url: str, expected: str) -> None:
    out = run(face_assets("persons", "list"), tmp_path, DATABASE_URL=url)
    assert out.returncode == 2
    assert out.stderr.startswith("error: DATABASE_URL") and len(out.stderr.strip().splitlines()) == 1
    assert expected in out.stderr and "s3cret" not in out.stderr


@pytest.mark.parametrize("command", [["persons", "list"], ["faces", "reject", "1"], ["export", "out"]])
def test_reading_a_database_that_does_not_exist_is_refused(tmp_path: Path, command: list[str]) -> None:
    typo = tmp_path / "nonexistent" / "dir" / "x.db"
    out = run(face_assets(*command), tmp_path, DATABASE_URL=f"sqlite:///{typo}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"no database at {typo}" in out.stderr
    assert not (tmp_path / "nonexistent").exists() and not (tmp_path / "out").exists()


def test_encode_names_each_unreadable_file_and_fails_when_none_could_be_read(
    tmp_path: Path, stub_photo_folder: Path, stub_models: None
) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    missing = tmp_path / "missing.jpg"
    nothing = run(face_assets("encode", str(text), str(missing), "-o", "faces.pkl"), tmp_path)
    assert nothing.returncode == 2
    assert str(text) in nothing.stderr and f"{missing}: file not found" in nothing.stderr
    assert not (tmp_path / "faces.pkl").exists()

    photo = next((stub_photo_folder / IDENTITIES[0]).glob("*.jpg"))
    gradient = stub_photo_folder / "other" / "gradient.png"
    some = run(face_assets("encode", str(photo), str(gradient), str(text), "-o", "faces.pkl"), tmp_path)
    assert some.returncode == 0, some.stderr
    assert "1 faces from 1 images; 2 images read, 1 without a face, 1 unreadable" in some.stdout
    assert str(text) in some.stderr


def test_a_run_names_this_runs_bad_files_and_not_earlier_ones(
    tmp_path: Path, stub_photo_folder: Path, stub_models: None
) -> None:
    library = _small_library(tmp_path, stub_photo_folder)
    photo = next((library / IDENTITIES[0]).glob("*.jpg"))
    truncated = library / "truncated.jpg"
    truncated.write_bytes(photo.read_bytes()[:2000])  # a header that opens, data that does not
    bomb = write_png_bomb(library / "huge.png")
    (library / "empty.jpg").write_bytes(b"")
    (library / "readme.txt").write_text("not media, not worth a line")

    first = run(face_assets("all", str(library)), tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Traceback" not in first.stderr
    assert f"{bomb}: too many pixels" in first.stderr
    assert f"{library / 'empty.jpg'}: empty file" in first.stderr
    assert "readme.txt" not in first.stderr
    assert str(truncated) in first.stderr and "error: 1 file" in first.stderr

    second = run(face_assets("all", str(library)), tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert str(truncated) not in second.stderr  # recorded last time: not this run's error
    assert f"{bomb}: too many pixels" in second.stderr  # never registered: looked at again


def _run_status(home: Path, run_id: str) -> DagsterRunStatus | None:
    instance = DagsterInstance.from_config(str(home))
    found = instance.get_run_by_id(run_id)
    instance.dispose()
    return found.status if found else None


def _lock_owner(database: Path) -> str | None:
    conn = sqlite3.connect(database, timeout=5)
    try:
        row = conn.execute('SELECT "Owner" FROM "FaceAssetsLocks"').fetchone()
    except sqlite3.OperationalError:  # the table is not there yet
        row = None
    conn.close()
    return row[0] if row else None


def _kill_when(command: list[str], cwd: Path, env: dict[str, str], reached: Callable[[], Any]) -> Any:
    """Starts `command` and kills it (SIGKILL) as soon as `reached()` gives a value that is
    still true after the kill; that value. Tried a few times: a fast step can end unseen."""
    for _ in range(6):
        environment = {**os.environ, **env}
        process = subprocess.Popen(command, cwd=cwd, env=environment, stdout=DEVNULL, stderr=DEVNULL)
        seen = None
        while not seen and process.poll() is None:
            seen = reached()
            time.sleep(0.002)
        if seen:
            process.kill()
            process.wait()
            if reached() == seen:
                return seen
        process.wait()
    pytest.fail("the run never reached the state to be killed in")


def _kill_while_locked(command: list[str], cwd: Path, database: Path, env: dict[str, str]) -> str:
    return str(_kill_when(command, cwd, env, lambda: _lock_owner(database)))


@pytest.mark.slow
def test_a_run_killed_holding_the_persons_lock_is_taken_over_and_marked_failed(
    tmp_path: Path, stub_photo_folder: Path, stub_models: None
) -> None:
    home, env = _dagster_home(tmp_path)
    library = _small_library(tmp_path, stub_photo_folder)
    assert run(face_assets("all", str(library)), tmp_path, **env).returncode == 0
    database = tmp_path / "data" / "face_assets.db"

    owner = _kill_while_locked(face_assets("recluster", "--rebuild"), tmp_path, database, env)
    assert owner.startswith("Dagster run ")
    started = time.monotonic()
    after = run(face_assets("recluster"), tmp_path, **env)
    assert after.returncode == 0, after.stderr[-3000:]
    assert time.monotonic() - started < 120  # no waiting for a lock of a process that is gone
    assert f"took over the lock person_clusters from {owner}: its process " in after.stderr
    assert _lock_owner(database) is None

    assert _run_status(home, owner.removeprefix("Dagster run ")) == DagsterRunStatus.FAILURE


def test_unlock_releases_a_lock_by_hand(tmp_path: Path) -> None:
    database = tmp_path / "faces.db"
    store = FaceStore.from_url(f"sqlite:///{database}", upgrade=True)
    with store.lock("person_clusters", "a worker on a machine that was switched off"):
        out = run(face_assets("unlock"), tmp_path, DATABASE_URL=f"sqlite:///{database}")
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("person_clusters released (held by a worker on a machine")
        assert _lock_owner(database) is None
    again = run(face_assets("unlock"), tmp_path, DATABASE_URL=f"sqlite:///{database}")
    assert again.stdout.strip() == "person_clusters was not held"


def test_a_read_only_thumbnail_folder_ends_in_one_line_and_the_faces_wait(
    tmp_path: Path, stub_photo_folder: Path, stub_models: None
) -> None:
    library = _small_library(tmp_path, stub_photo_folder)
    database = tmp_path / "faces.db"
    env = {"DATABASE_URL": f"sqlite:///{database}", "THUMBNAIL_SAVE_PATH": str(tmp_path / "thumbnails")}
    for _ in mounted_tmpfs(tmp_path / "thumbnails", "size=1m,ro"):
        refused = run(face_assets("all", str(library)), tmp_path, **env)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        (line,) = [x for x in refused.stderr.splitlines() if x.startswith("error:")]
        assert line.startswith(f"error: thumbnail folder {tmp_path / 'thumbnails'}: Read-only file system")
    with_thumbnail = 'SELECT COUNT(*) FROM "Faces" WHERE "ThumbnailPath" IS NOT NULL'
    waiting = FaceStore.from_url(f"sqlite:///{database}").counts()["faces"]
    assert waiting > 0 and _query(database, with_thumbnail) == 0

    again = run(face_assets("all", str(library)), tmp_path, **env)  # the folder is writable now
    assert again.returncode == 0, again.stderr[-3000:]
    assert _query(database, 'SELECT COUNT(*) FROM "Faces"') == waiting  # nothing detected twice
    assert _query(database, with_thumbnail) == waiting
    assert len(list((tmp_path / "thumbnails").rglob("*.jpg"))) == waiting


def _query(database: Path, statement: str) -> int:
    conn = sqlite3.connect(database)
    (value,) = conn.execute(statement).fetchone()
    conn.close()
    return int(value)


def test_corrections_show_in_the_gallery_at_once_and_no_name_lands_in_dagster(
    tmp_path: Path, stub_photo_folder: Path, stub_models: None
) -> None:
    home, env = _dagster_home(tmp_path)
    assert (
        run(face_assets("all", str(_small_library(tmp_path, stub_photo_folder))), tmp_path, **env).returncode
        == 0
    )
    page = tmp_path / "data" / "gallery" / "index.html"
    store = FaceStore.from_url(f"sqlite:///{tmp_path / 'data' / 'face_assets.db'}")
    kept, forgotten = [p.id for p in store.list_persons()][:2]
    thumbnails = [f.thumbnail for f in store.faces_by_person()[forgotten] if f.thumbnail]
    assert thumbnails and all(Path(t).name in page.read_text() for t in thumbnails)

    for person, name in ((kept, "Ada Lovelace"), (forgotten, "Grace Hopper")):
        out = run(face_assets("persons", "rename", str(person), name), tmp_path, **env)
        assert out.returncode == 0, out.stderr
        assert name in page.read_text()  # not only after the next clustering
    assert run(face_assets("recluster"), tmp_path, **env).returncode == 0
    out = run(face_assets("persons", "forget", str(forgotten)), tmp_path, **env)
    assert out.returncode == 0, out.stderr

    shown = page.read_text()
    assert "Grace Hopper" not in shown and "Ada Lovelace" in shown
    assert not any(Path(t).name in shown for t in thumbnails)
    for path in (p for p in home.rglob("*") if p.is_file()):
        values = _stored_values(path) if path.suffix == ".db" else _texts(path.read_bytes())
        assert not any(b"Grace Hopper" in v or b"Ada Lovelace" in v for v in values), path


@pytest.mark.slow
def test_the_demo_runs_on_a_database_of_its_own(tmp_path: Path, models_dir: Path) -> None:
    """`face-assets run` without a folder never puts the sample into the configured database."""
    configured = tmp_path / "production.db"
    FaceStore.from_url(f"sqlite:///{configured}", upgrade=True).dispose()
    before = configured.read_bytes()
    env = {"DATABASE_URL": f"sqlite:///{configured}", "FACE_ASSETS_DATA_DIR": str(tmp_path / "data")}
    out = run(face_assets("run"), tmp_path, **env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert configured.read_bytes() == before
    demo = FaceStore.from_url(f"sqlite:///{tmp_path / 'data' / 'demo' / 'face_assets.db'}")
    assert demo.counts()["persons"] >= 5 and "evaluation against folder labels" in out.stdout
    assert "  identities             5\n" in out.stdout  # the people of train/ and val/, not the splits
    assert (tmp_path / "data" / "demo" / "gallery" / "index.html").is_file()


@pytest.mark.slow
def test_a_run_killed_in_detection_is_marked_failed_and_the_rerun_finishes_each_item_once(
    tmp_path: Path, stub_models: None
) -> None:
    home, env = _dagster_home(tmp_path)
    # Enough photos that a run is seen midway: the stub detector takes no time, and with a few
    # photos a loaded machine saw every run only before or after detection.
    library = make_stub_people(tmp_path / "people", IDENTITIES[:2], {"library": 40}) / "library"
    database = tmp_path / "data" / "face_assets.db"
    photos = len(list(library.rglob("*.jpg")))
    processed = 'SELECT COUNT(*) FROM "MediaItems" WHERE "IsFacesExtracted" = 1'

    def midway() -> int:
        try:
            done = _query(database, processed)
        except sqlite3.OperationalError:  # not created yet
            return 0
        return done if 0 < done < photos else 0

    assert _kill_when(face_assets("all", str(library)), tmp_path, env, midway)
    instance = DagsterInstance.from_config(str(home))
    (killed,) = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    instance.dispose()
    again = run(face_assets("all", str(library)), tmp_path, **env)
    assert again.returncode == 0, again.stderr[-3000:]

    assert _run_status(home, killed.run_id) == DagsterRunStatus.FAILURE
    assert _query(database, processed) == photos == _query(database, 'SELECT COUNT(*) FROM "MediaFile"')
    per_item = (
        'SELECT COUNT(*) FROM "MediaItems" i WHERE "FaceCount" <> '
        '(SELECT COUNT(*) FROM "Faces" f WHERE f."MediaItemId" = i."Id")'
    )
    assert _query(database, per_item) == 0  # no item's faces written twice


def test_refused_work_is_one_line_without_a_dagster_trace(tmp_path: Path) -> None:
    database = tmp_path / "faces.db"
    store = FaceStore.from_url(f"sqlite:///{database}", upgrade=True)
    with store.lock("person_clusters", "a clustering started elsewhere"):
        refused = run(face_assets("recluster"), tmp_path, DATABASE_URL=f"sqlite:///{database}")
        verbose = run(face_assets("recluster", "-v"), tmp_path, DATABASE_URL=f"sqlite:///{database}")
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: person_clusters is running elsewhere (held by a clustering started")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr  # the trace, when asked for
