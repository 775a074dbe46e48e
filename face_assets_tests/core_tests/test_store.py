import json
import re
import sqlite3
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import event, inspect, select

from face_assets.core.media_item import register_folder
from face_assets.core.storage.engine import make_engine
from face_assets.core.storage.schema import LEGACY_COLUMNS, PRODUCT_COLUMNS, MediaFileTable, MediaItemsTable
from face_assets.core.storage.store import FaceStore, SchemaError, decode_embedding, encode_embedding
from face_assets.core.vision.types import DetectedFace
from face_assets_tests.conftest import new_database_url, sql


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "faces.db"


@pytest.fixture
def store(db_url: str) -> Iterator[FaceStore]:
    face_store = FaceStore.from_url(db_url, upgrade=True)
    yield face_store
    face_store.dispose()


def _face(x: float = 10.0) -> DetectedFace:
    return DetectedFace(box_xyxy=(x, 20.0, x + 40.0, 70.0), score=0.99, landmarks=((x + 5, 30.0),) * 5)


def _rows(store: FaceStore, statement: str) -> list[tuple]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sql(conn, statement))]


def _item(store: FaceStore, item_id: int) -> dict:
    with store.engine.connect() as conn:
        row = conn.execute(select(MediaItemsTable).where(MediaItemsTable.c.Id == item_id)).mappings()
        return dict(row.one())


def _png(path: Path) -> Path:
    """A small PNG of its own: two files of the same content would be one media item."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shade = zlib.crc32(str(path).encode())
    Image.new("RGB", (8, 6), (shade & 255, (shade >> 8) & 255, (shade >> 16) & 255)).save(path, "PNG")
    return path


# schema ---------------------------------------------------------------------------------------


def test_upgrade_creates_everything_once(db_url: str) -> None:
    store = FaceStore(make_engine(db_url))
    first = store.upgrade()
    assert set(LEGACY_COLUMNS) <= set(first)
    assert store.upgrade() == []
    store.dispose()


def test_fresh_store_has_every_column(store: FaceStore) -> None:
    inspector = inspect(store.engine)
    for table in LEGACY_COLUMNS:
        columns = {c["name"] for c in inspector.get_columns(table)}
        assert columns == set(LEGACY_COLUMNS[table]) | set(PRODUCT_COLUMNS[table])
    assert store.upgrade() == []


LEGACY_DDL = [
    """CREATE TABLE MediaFile (Id INTEGER PRIMARY KEY AUTOINCREMENT, FilePath NVARCHAR(500) NOT NULL,
       FileName NVARCHAR(255) NOT NULL, Extensions NVARCHAR(10), CreatedAt DATETIME, ModifiedAt DATETIME)""",
    """CREATE TABLE MediaItems (Id INTEGER PRIMARY KEY AUTOINCREMENT,
       MediaFileId INTEGER NOT NULL REFERENCES MediaFile(Id), Name NVARCHAR(255) NOT NULL,
       IsFacesExtracted BIT, FacesExtractedOn DATETIME)""",
    """CREATE TABLE Persons (Id INTEGER PRIMARY KEY AUTOINCREMENT,
       PortraitMediaFileId INTEGER REFERENCES MediaFile(Id), Name NVARCHAR(255), Rank NVARCHAR(50),
       Appointment NVARCHAR(100), Type NVARCHAR(50), CreatedAt DATETIME, ModifiedAt DATETIME)""",
    """CREATE TABLE Faces (Id INTEGER PRIMARY KEY AUTOINCREMENT,
       MediaItemId INTEGER NOT NULL REFERENCES MediaItems(Id), PersonId INTEGER REFERENCES Persons(Id),
       BoundingBox NVARCHAR(255), Embedding VARBINARY, FrameNumber INTEGER, Name NVARCHAR(255),
       IsUserVerified BIT, CreatedAt DATETIME, ModifiedAt DATETIME)""",
]

JSON_VECTOR = np.random.default_rng(1).normal(size=512).astype(np.float32)
BYTES_VECTOR = np.random.default_rng(2).normal(size=512).astype(np.float32)


@pytest.fixture
def legacy_db(tmp_path: Path) -> Path:
    """A database written by the legacy tools: legacy columns only, a few rows."""
    path = tmp_path / "legacy.db"
    conn = sqlite3.connect(path)
    for ddl in LEGACY_DDL:
        conn.execute(ddl)
    stamp = "2021-03-04 10:00:00"
    conn.execute(
        "INSERT INTO MediaFile VALUES (1, ?, 'a.jpg', 'jpg', ?, ?)",
        (str(tmp_path / "old" / "a.jpg"), stamp, stamp),
    )
    conn.execute(
        "INSERT INTO MediaFile VALUES (2, ?, 'b.jpg', 'jpg', ?, ?)", (str(tmp_path / "old"), stamp, stamp)
    )
    conn.execute("INSERT INTO MediaItems VALUES (1, 1, 'a.jpg', 0, NULL)")
    conn.execute("INSERT INTO MediaItems VALUES (2, 2, 'b.jpg', NULL, NULL)")
    conn.execute("INSERT INTO Persons VALUES (1, 1, 'Unknown-1', NULL, NULL, NULL, ?, ?)", (stamp, stamp))
    as_json = json.dumps([float(v) for v in JSON_VECTOR])
    conn.execute(
        "INSERT INTO Faces VALUES (1, 1, 1, '[1, 2, 30, 40]', ?, 0, 'f1.jpg', 1, ?, ?)",
        (as_json, stamp, stamp),
    )
    conn.execute(
        "INSERT INTO Faces VALUES (2, 1, NULL, '[50, 2, 80, 40]', ?, 0, 'f2.jpg', 0, ?, ?)",
        (BYTES_VECTOR.astype("<f4").tobytes(), stamp, stamp),
    )
    conn.commit()
    conn.close()
    return path


def _legacy_snapshot(path: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(path)
    try:
        return {
            table: conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY Id").fetchall()
            for table, columns in LEGACY_COLUMNS.items()
        }
    finally:
        conn.close()


def test_a_store_that_may_not_upgrade_refuses_a_legacy_schema_and_names_the_fix(legacy_db: Path) -> None:
    before = _legacy_snapshot(legacy_db)
    with pytest.raises(SchemaError, match="face-assets db init") as error:
        FaceStore.from_url(f"sqlite:///{legacy_db}", upgrade=False)
    assert "MediaFile.PathKey" in str(error.value)
    assert _legacy_snapshot(legacy_db) == before


def test_upgrade_of_legacy_schema_adds_columns_and_keeps_rows(legacy_db: Path) -> None:
    before = _legacy_snapshot(legacy_db)
    store = FaceStore(make_engine(f"sqlite:///{legacy_db}"))
    changes = store.upgrade()
    inspector = inspect(store.engine)
    for table, product in PRODUCT_COLUMNS.items():
        assert {f"{table}.{c}" for c in product} <= set(changes)
        assert set(product) <= {c["name"] for c in inspector.get_columns(table)}
    assert store.upgrade() == []
    store.dispose()
    after = _legacy_snapshot(legacy_db)
    assert after == before
    assert [type(v) for v in after["Faces"][0]] == [type(v) for v in before["Faces"][0]]  # text stays text


def test_legacy_embeddings_json_and_bytes_are_read(legacy_db: Path) -> None:
    store = FaceStore.from_url(f"sqlite:///{legacy_db}")
    data = store.face_embeddings()
    store.dispose()
    assert data.face_ids.tolist() == [1, 2]
    assert data.media_item_ids.tolist() == [1, 1]
    assert data.person_ids.tolist() == [1, -1]
    assert data.clustered.tolist() == [False, False]
    assert data.vectors.shape == (2, 512) and data.vectors.dtype == np.float32
    np.testing.assert_array_equal(data.vectors[0], JSON_VECTOR)
    np.testing.assert_array_equal(data.vectors[1], BYTES_VECTOR)


def test_legacy_items_are_pending_with_their_paths(legacy_db: Path, tmp_path: Path) -> None:
    """FilePath holds the full path (item 1) or the folder (item 2); a NULL flag means pending."""
    store = FaceStore.from_url(f"sqlite:///{legacy_db}")
    pending = store.pending_media_items()
    store.dispose()
    assert [(m.id, m.media_file_id, m.path) for m in pending] == [
        (1, 1, tmp_path / "old" / "a.jpg"),
        (2, 2, tmp_path / "old" / "b.jpg"),
    ]


# media files and items ------------------------------------------------------------------------


def test_register_media_file_twice_keeps_one_row(store: FaceStore, tmp_path: Path) -> None:
    photo = _png(tmp_path / "photos" / "p.jpg")
    item = store.register_media_file(photo, "PNG", photo.stat().st_size)
    assert item is not None
    assert store.register_media_file(photo, "PNG", photo.stat().st_size) is None
    # The same file reached through another spelling of its path is the same file.
    assert store.register_media_file(tmp_path / "photos" / ".." / "photos" / "p.jpg", "PNG", 1) is None
    assert _rows(store, 'SELECT COUNT(*) FROM "MediaFile"') == [(1,)]
    assert _rows(store, 'SELECT "Id", "Name" FROM "MediaItems"') == [(item, "p.jpg")]
    assert [(m.id, m.path) for m in store.pending_media_items()] == [(item, photo.resolve())]


def test_files_registered_together_are_each_registered_once(store: FaceStore, tmp_path: Path) -> None:
    """One transaction for many files: a file given twice, or already known, is skipped and the
    others get their rows, in order."""
    known = store.register_media_file(tmp_path / "known.jpg", "JPEG", 1)
    files = [(tmp_path / name, "JPEG", 1) for name in ("a.jpg", "known.jpg", "b.jpg", "a.jpg")]
    ids = store.register_media_files(files)
    assert ids[1] is None and ids[3] is None and ids[0] is not None and ids[2] is not None
    assert [m.id for m in store.pending_media_items()] == [known, ids[0], ids[2]]
    assert _rows(store, 'SELECT COUNT(*) FROM "MediaFile"') == [(3,)]


@pytest.mark.parametrize("server", ["postgresql", "mariadb"])  # SQLite has one writer at a time
def test_a_file_registered_by_another_run_meanwhile_leaves_the_others_registered(
    request: pytest.FixtureRequest, server: str, tmp_path: Path
) -> None:
    """Another run registers b.jpg between this run's check and its insert: the chunk is done
    again file by file, b.jpg is skipped and the others are registered once."""

    url = new_database_url(request, server, tmp_path)
    store, other = FaceStore.from_url(url, upgrade=True), FaceStore.from_url(url)
    raced = []

    def meanwhile(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if not raced and re.match(r"\s*INSERT INTO [`\"]?MediaFile[`\"]? ", statement, re.IGNORECASE):
            if "b.jpg" in str(parameters):
                raced.append(other.register_media_file(tmp_path / "b.jpg", "JPEG", 1))

    event.listen(store.engine, "before_cursor_execute", meanwhile)
    try:
        ids = store.register_media_files([(tmp_path / n, "JPEG", 1) for n in ("a.jpg", "b.jpg", "c.jpg")])
    finally:
        event.remove(store.engine, "before_cursor_execute", meanwhile)
        other.dispose()
        store.dispose()
    assert raced and raced[0] is not None
    assert ids[1] is None and ids[0] is not None and ids[2] is not None
    other = FaceStore.from_url(url)
    names = sorted(name for (name,) in _rows(other, 'SELECT "FileName" FROM "MediaFile"'))
    other.dispose()
    assert names == ["a.jpg", "b.jpg", "c.jpg"]


def test_pending_media_items_limit_and_order(store: FaceStore, tmp_path: Path) -> None:
    ids = [store.register_media_file(tmp_path / f"{i}.jpg", "JPEG", 10) for i in range(3)]
    assert [m.id for m in store.pending_media_items(limit=2)] == ids[:2]


def test_file_inside_a_folder_of_the_same_name_round_trips(store: FaceStore, tmp_path: Path) -> None:
    """A product-written row must read back as the file it registered, whatever the folder is called."""
    photo = _png(tmp_path / "IMG_1.jpg" / "IMG_1.jpg")
    item = store.register_media_file(photo, "PNG", photo.stat().st_size)
    assert [(m.id, m.path) for m in store.pending_media_items()] == [(item, photo.resolve())]


def test_save_detection_writes_faces_and_marks_item_done(store: FaceStore, tmp_path: Path) -> None:
    item = store.register_media_file(tmp_path / "a.jpg", "JPEG", 10)
    assert item is not None
    assert store.save_detection(item, [_face(10.0), _face(60.0)], "retinaface", (640, 480)) is True
    row = _item(store, item)
    assert row["IsFacesExtracted"] and row["FaceCount"] == 2 and row["DetectorName"] == "retinaface"
    assert (row["ImageWidth"], row["ImageHeight"]) == (640, 480)
    assert store.pending_media_items() == []
    faces = store.faces_of_media_items()[item]
    assert [f["box_xyxy"] for f in faces] == [[10.0, 20.0, 50.0, 70.0], [60.0, 20.0, 100.0, 70.0]]
    assert {f.box_xyxy for f in store.faces_without_embedding()} == {
        (10.0, 20.0, 50.0, 70.0),
        (60.0, 20.0, 100.0, 70.0),
    }


def test_save_detection_twice_adds_nothing(store: FaceStore, tmp_path: Path) -> None:
    item = store.register_media_file(tmp_path / "a.jpg", "JPEG", 10)
    assert item is not None
    store.save_detection(item, [_face()], "retinaface", (64, 64))
    assert store.save_detection(item, [_face(), _face(30.0)], "retinaface", (64, 64)) is False
    assert store.counts()["faces"] == 1
    assert _item(store, item)["FaceCount"] == 1


def test_save_detection_without_faces_marks_item_done(store: FaceStore, tmp_path: Path) -> None:
    item = store.register_media_file(tmp_path / "empty.jpg", "JPEG", 10)
    assert item is not None
    assert store.save_detection(item, [], "retinaface", (64, 64)) is True
    row = _item(store, item)
    assert row["IsFacesExtracted"] and row["FaceCount"] == 0
    assert store.counts()["media_items_pending"] == 0 and store.counts()["faces"] == 0


def test_save_extraction_error_records_the_message(store: FaceStore, tmp_path: Path) -> None:
    item = store.register_media_file(tmp_path / "bad.jpg", "JPEG", 10)
    assert item is not None
    store.save_extraction_error(item, "bad.jpg: cannot decode image (truncated)")
    assert store.extraction_errors() == [
        {"Id": item, "Name": "bad.jpg", "ExtractionError": "bad.jpg: cannot decode image (truncated)"}
    ]
    assert store.pending_media_items() == []
    counts = store.counts()
    assert (counts["media_items_failed"], counts["media_items_pending"]) == (1, 0)


def test_saved_embeddings_round_trip(store: FaceStore, tmp_path: Path) -> None:
    item = store.register_media_file(tmp_path / "a.jpg", "JPEG", 10)
    assert item is not None
    store.save_detection(item, [_face(), _face(30.0)], "retinaface", (64, 64))
    ids = [f.id for f in store.faces_without_embedding()]
    vectors = np.random.default_rng(0).normal(size=(2, 512)).astype(np.float32)
    store.save_embeddings(ids, vectors, "facenet")
    data = store.face_embeddings()
    assert data.face_ids.tolist() == ids and data.person_ids.tolist() == [-1, -1]
    np.testing.assert_array_equal(data.vectors, vectors)
    assert store.faces_without_embedding() == []


# embedding encoding ---------------------------------------------------------------------------


def test_decode_round_trips_encode() -> None:
    vector = np.random.default_rng(0).normal(size=512).astype(np.float32)
    encoded = encode_embedding(vector)
    assert len(encoded) == 512 * 4
    decoded = decode_embedding(encoded)
    assert decoded is not None and decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, vector)


def test_decode_reads_json_text_and_bytes() -> None:
    vector = np.random.default_rng(1).normal(size=512).astype(np.float32)
    as_json = json.dumps([float(v) for v in vector])
    for value in (as_json, as_json.encode("ascii"), encode_embedding(vector)):
        np.testing.assert_array_equal(decode_embedding(value), vector)
    # psycopg2 hands bytea back as a memoryview
    np.testing.assert_array_equal(decode_embedding(memoryview(encode_embedding(vector))), vector)  # type: ignore[arg-type]
    assert decode_embedding(None) is None


def test_decode_does_not_misread_raw_bytes_starting_with_a_bracket() -> None:
    vector = np.random.default_rng(3).normal(scale=0.04, size=512).astype(np.float32)
    raw = bytearray(vector.astype("<f4").tobytes())
    raw[0] = ord("[")  # low mantissa byte of the first value: still a valid, similar float
    vector = np.frombuffer(bytes(raw), dtype="<f4")
    assert encode_embedding(vector)[:1] == b"["
    np.testing.assert_array_equal(decode_embedding(encode_embedding(vector)), vector)


def test_decode_does_not_misread_ascii_bytes_starting_with_a_bracket() -> None:
    """Every byte printable ASCII (small positive floats can be), first byte '['."""
    raw = bytearray(b"[" + bytes((0x30 + i % 40) for i in range(1, 2047)) + b"=")
    for k in range(3, 2048, 4):
        raw[k] = 0x3D  # sign/exponent byte of a float near 0.05
    vector = np.frombuffer(bytes(raw), dtype="<f4")
    assert bytes(raw).isascii() and np.all(np.abs(vector) < 1)
    np.testing.assert_array_equal(decode_embedding(bytes(raw)), vector)


# register_folder ------------------------------------------------------------------------------


def test_register_folder_registers_real_images_only(store: FaceStore, tmp_path: Path) -> None:
    library = tmp_path / "library"
    png_named_jpg = _png(library / "holiday.jpg")
    nested = _png(library / "2020" / "summer" / "beach.png")
    text_as_jpg = library / "notes.jpg"
    text_as_jpg.write_text("not a photo")
    _png(library / ".hidden.png")
    _png(library / ".thumbnails" / "t.png")

    result = register_folder(store, library)

    registered = {m.path for m in store.pending_media_items()}
    assert registered == {png_named_jpg.resolve(), nested.resolve()}
    assert len(result.added) == 2 and result.already_known == 0
    assert [path for path, _ in result.skipped] == [text_as_jpg]
    assert all(reason for _, reason in result.skipped)
    assert _rows(store, 'SELECT "MediaFormat" FROM "MediaFile" ORDER BY "Id"') == [("PNG",), ("PNG",)]


def test_register_folder_twice_adds_nothing(store: FaceStore, tmp_path: Path) -> None:
    library = tmp_path / "library"
    for name in ("a.png", "b.png", "sub/c.png"):
        _png(library / name)
    assert len(register_folder(store, library).added) == 3
    again = register_folder(store, library)
    assert again.added == [] and again.already_known == 3
    assert store.counts()["media_items"] == 3


def test_register_folder_rejects_a_file(store: FaceStore, tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        register_folder(store, _png(tmp_path / "a.png"))


def test_register_folder_knows_files_of_legacy_rows(legacy_db: Path, tmp_path: Path) -> None:
    """A photo the legacy tools registered (either FilePath form) is not registered a second time."""
    _png(tmp_path / "old" / "a.jpg")
    _png(tmp_path / "old" / "b.jpg")
    store = FaceStore.from_url(f"sqlite:///{legacy_db}")
    result = register_folder(store, tmp_path / "old")
    counts = store.counts()
    store.dispose()
    assert result.added == []
    assert counts["media_items"] == 2


# batched writes -------------------------------------------------------------------------------


def _statements(store: FaceStore, work) -> int:  # noqa: ANN001
    """How many statements (a batch counts once) the driver receives while `work` runs."""
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        work()
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    return len(seen)


def test_writes_are_batched_never_a_statement_per_face(store: FaceStore, tmp_path: Path) -> None:
    items = [store.register_media_file(tmp_path / f"{n}.jpg", "JPEG", 10) for n in range(3)]
    assert all(items)
    one, many = [_face()], [_face(10.0 * k) for k in range(12)]
    per_item = [
        _statements(store, lambda i=i, f=f: store.save_detection(i, f, "retinaface", (640, 480)))
        for i, f in ((items[0], one), (items[1], many))
    ]
    assert per_item[0] == per_item[1]  # one claim and one batch of faces, whatever their number
    faces = [f.id for f in store.faces_without_embedding()]
    assert len(faces) == 13
    vectors = np.random.default_rng(0).normal(size=(13, 512)).astype(np.float32)
    (person,) = store.apply_person_changes([faces], [], [])
    for write in (
        lambda ids: store.save_embeddings(ids, vectors[: len(ids)], "facenet"),
        lambda ids: store.save_thumbnails([(f, f"{f}.jpg", f"{f}.jpg") for f in ids], [1.0] * len(ids)),
        lambda ids: store.apply_person_changes([], [(f, person, 0.9) for f in ids], []),  # matches
        lambda ids: store.apply_person_changes([], [], ids),  # noise
        lambda ids: store.apply_person_changes([ids], [], []),  # a new person
    ):
        assert _statements(store, lambda w=write: w(faces[:1])) == _statements(
            store, lambda w=write: w(faces)
        )


def test_a_file_larger_than_2_gib_is_registered(store: FaceStore, tmp_path: Path) -> None:
    size = 5 * 2**30  # a long video
    assert store.register_media_file(tmp_path / "holiday.mp4", "MP4", size) is not None
    with store.engine.connect() as conn:
        assert conn.execute(select(MediaFileTable.c.FileSize)).scalar_one() == size


def test_unicode_paths_round_trip(store: FaceStore, tmp_path: Path) -> None:
    photo = _png(tmp_path / "library" / "Müller" / "Фото 2019" / "写真 été.jpg")
    result = register_folder(store, tmp_path / "library")
    assert len(result.added) == 1
    assert [m.path for m in store.pending_media_items()] == [photo.resolve()]
    assert register_folder(store, tmp_path / "library").already_known == 1  # found again by its key


def test_a_path_too_long_for_the_table_is_skipped_with_its_reason(store: FaceStore, tmp_path: Path) -> None:
    library = tmp_path / "library"
    deep = library
    while len(str(deep)) <= 520:
        deep = deep / ("d" * 60)
    too_deep = _png(deep / "a.png")
    fine = _png(library / "b.png")
    result = register_folder(store, library)
    assert [m.path for m in store.pending_media_items()] == [fine.resolve()]
    ((skipped, reason),) = result.skipped
    assert skipped == too_deep and "FilePath" in reason and "500" in reason


def test_two_workers_at_once_register_and_detect_each_item_exactly_once(
    store: FaceStore, db_url: str, tmp_path: Path
) -> None:
    """A sensor's run and a command started by hand on the same rows, on two connections: the
    unique PathKey and the claim of each item keep every row single."""
    library = tmp_path / "library"
    for n in range(30):
        _png(library / f"{n:02d}.png")
    workers = [FaceStore.from_url(db_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    claimed: list[list[int]] = [[], []]
    failures: list[BaseException] = []

    def work(index: int) -> None:
        worker = workers[index]
        barrier.wait()
        try:
            register_folder(worker, library)
            for item in worker.pending_media_items():
                if worker.save_detection(item.id, [_face(), _face(60.0)], "retinaface", (64, 64)):
                    claimed[index].append(item.id)
        except BaseException as error:  # both workers must finish: a deadlock is no excuse
            failures.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for worker in workers:
        worker.dispose()

    assert failures == []
    counts = store.counts()
    assert counts["media_items"] == 30 and counts["media_items_pending"] == 0
    assert sorted(claimed[0] + claimed[1]) == sorted(set(claimed[0] + claimed[1]))  # nobody twice
    assert len(claimed[0]) + len(claimed[1]) == 30 and counts["faces"] == 60
    assert _rows(store, 'SELECT COUNT(DISTINCT "PathKey") FROM "MediaFile"') == [(30,)]
