"""Every statement the product issues is valid T-SQL, without a SQL Server.

A realistic flow runs through the core on SQLite while every statement is captured as
SQLAlchemy built it; each is then compiled for the product's own `mssql+pyodbc` engine exactly
as execution compiles it (parameter keys, executemany) and checked: bracket-quoted identifiers,
TOP instead of LIMIT, new ids from SCOPE_IDENTITY() (never OUTPUT), at most 2100 parameters,
and a full T-SQL parse by sqlglot. The DDL `face-assets db init` issues is checked the same way.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlglot
from PIL import Image
from sqlalchemy import Delete, Insert, Select, Update, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable, ExecutableDDLElement
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.elements import ReleaseSavepointClause, RollbackToSavepointClause, SavepointClause
from sqlglot import exp

from face_assets.core import correction
from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.embedding import assign_tracks
from face_assets.core.export import export_persons
from face_assets.core.gallery import write_gallery
from face_assets.core.media_item import register_folder
from face_assets.core.person import match_new_faces, rebuild_persons, update_persons
from face_assets.core.portrait import update_portraits
from face_assets.core.settings import get_settings
from face_assets.core.storage.engine import add_column_sql, make_engine
from face_assets.core.storage.schema import PRODUCT_COLUMNS, Timestamp, metadata
from face_assets.core.storage.store import FaceStore, LockHeld
from face_assets.core.vision.types import DetectedFace
from face_assets_tests.core_tests.synthetic import identities

SQL_SERVER_MAX_PARAMETERS = 2100
SAVEPOINTS = SavepointClause | RollbackToSavepointClause | ReleaseSavepointClause
# The flow below issues about 70 distinct statements; far fewer means the capture broke.
MIN_DISTINCT_STATEMENTS = 50
IDENTITY_TABLES = {"MediaFile", "MediaItems", "Persons", "Faces"}
FACE = DetectedFace(
    (2.0, 2.0, 20.0, 20.0), 0.99, ((8.0, 8.0), (14.0, 8.0), (11.0, 11.0), (9.0, 15.0), (13.0, 15.0))
)
# Enough faces in one person that a merge or split touches more ids than one statement may carry.
BIG_PERSON_FACES = 2300


def sql_server_dialect() -> Dialect:
    """The dialect of the product's own SQL Server engine (fast_executemany, qmark parameters),
    with the attributes a first connection to SQL Server 2022 sets (large types as (max))."""
    engine = make_engine("mssql+pyodbc://u:p@sqlserver:1433/Media?driver=ODBC+Driver+18+for+SQL+Server")
    dialect = engine.dialect
    dialect.server_version_info = (16, 0, 4135, 4)
    dialect._setup_version_attributes()  # type: ignore[attr-defined]
    dialect._supports_nvarchar_max = True  # type: ignore[attr-defined]
    return dialect


@dataclass(frozen=True, eq=False)
class Captured:
    statement: ClauseElement
    parameters: list[dict[str, Any]]

    def compile_for(self, dialect: Dialect) -> str:
        """Compiled as Connection.execute compiles it (column keys of the first parameter set,
        executemany for several), with IN lists and TOP values expanded as the driver sees them."""
        keys = sorted(self.parameters[0]) if self.parameters else []
        compiled = self.statement.compile(
            dialect=dialect,
            column_keys=keys,
            for_executemany=len(self.parameters) > 1,
            compile_kwargs={"render_postcompile": True},
        )
        return str(compiled).strip()


# A bind marker outside string literals.
_MARKER = re.compile(r"'(?:[^']|'')*'|\?")


def bind_count(sql: str) -> int:
    return sum(1 for m in _MARKER.finditer(sql) if m.group(0) == "?")


def with_literals(sql: str) -> str:
    return _MARKER.sub(lambda m: "1" if m.group(0) == "?" else m.group(0), sql)


def parse_tsql(sql: str) -> exp.Expression:
    """The statement as sqlglot's T-SQL parser reads it; raises on a syntax error. A statement it
    cannot model falls back to exp.Command, which proves nothing: that fails too."""
    tree = sqlglot.parse_one(sql, read="tsql")
    assert not isinstance(tree, exp.Command), f"sqlglot could not model: {sql}"
    return tree


def unquoted_identifiers(tree: exp.Expression) -> list[str]:
    """Table and column names not in [brackets]; OUTPUT's pseudo-table `inserted` is a keyword."""
    names = [t.name for t in tree.find_all(exp.Table) if not t.this.quoted]
    for column in tree.find_all(exp.Column):
        names += [
            p.name for p in column.parts if not p.quoted and p.name.lower() not in ("inserted", "deleted")
        ]
    return names


def add_photos(folder: Path, count: int, start: int) -> None:
    folder.mkdir(exist_ok=True)
    for index in range(start, start + count):
        Image.new("RGB", (24, 24), (index % 256, 0, 0)).save(folder / f"{index:04d}.png")


def detect_thumbnail_embed(store: FaceStore, vectors: np.ndarray) -> list[int]:
    """The per-item steps for every pending item, one face each, written through the store."""
    items = store.pending_media_items()
    for item in items:
        assert store.save_detection(item.id, [FACE], "stub", (24, 24))
    assert not store.save_detection(items[0].id, [FACE], "stub", (24, 24))  # already claimed
    lo, hi = items[0].id, items[-1].id
    records = store.faces_without_thumbnail((lo, hi))
    store.save_thumbnails([(r.id, f"{r.id}.jpg", f"t/{r.id}.jpg") for r in records], [150.0] * len(records))
    faces = [r.id for r in store.faces_without_embedding((lo, hi))]
    store.save_embeddings(faces, vectors[: len(faces)], "stub")
    return faces


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> list[Captured]:
    """Every SQL statement of a realistic library's life, through the core only."""
    root = tmp_path_factory.mktemp("mssql")
    store = FaceStore.from_url(f"sqlite:///{root / 'faces.db'}")
    seen: list[Captured] = []

    def remember(conn: Any, clauseelement: Any, multiparams: Any, params: Any, options: Any) -> None:
        # exec_driver_sql (SQLite's PRAGMAs) never reaches this event; plain strings cannot.
        if isinstance(clauseelement, ClauseElement):
            seen.append(Captured(clauseelement, list(multiparams) or ([dict(params)] if params else [])))

    event.listen(store.engine, "before_execute", remember)
    params = ClusterParams()
    vectors, truth = identities(seed=11, k=4, n=6)
    photos = root / "photos"

    # Registration, detection (an item without faces, one that fails), thumbnails, embeddings.
    add_photos(photos, 20, start=0)
    (photos / "notes.txt").write_text("not an image")
    assert len(register_folder(store, photos).added) == 20
    assert store.register_media_file(photos / "0000.png", "PNG", 1) is None
    assert len(store.pending_media_item_ids(limit=5)) == 5
    assert store.pending_media_item_ids(above=2, up_to=10, limit=3) == [3, 4, 5]
    assert len(store.pending_media_items(limit=4, id_range=(1, 10))) == 4
    store.save_detection(19, [], "stub", (24, 24))
    store.save_extraction_error(20, "truncated file")
    faces = detect_thumbnail_embed(store, vectors[truth < 3])
    assert len(faces) == 18
    # A video: faces in frames, followed into a track once embedded.
    clip = store.register_media_file(photos / "clip.mp4", "MP4", 1)
    assert clip is not None
    in_frames = [dataclasses.replace(FACE, frame=10 * i, time_s=float(i)) for i in range(3)]
    assert store.save_detection(clip, in_frames, "stub", (24, 24), video=(3.0, 10.0))
    video_faces = [r.id for r in store.faces_without_embedding((clip, clip))]
    store.save_embeddings(video_faces, vectors[truth == 0][:3], "stub")  # of a known identity
    assert assign_tracks(store) == 1

    # Clustering, then new photos matched in their batch and clustered, then a rebuild.
    assert update_persons(store, params).new_persons == 3
    add_photos(photos, 6, start=100)
    register_folder(store, photos)
    detect_thumbnail_embed(store, vectors[truth == 3])
    match_new_faces(store, params, (21, 26))
    update_persons(store, params)
    rebuild_persons(store, params)
    update_portraits(store)

    # Every correction.
    persons = [p.id for p in correction.list_persons(store)]
    assert len(persons) == 4
    members = {p: [f.id for f in correction.person_faces(store, p)] for p in persons}
    correction.rename_person(store, persons[0], "Ada")
    with pytest.raises(correction.CorrectionError):
        correction.rename_person(store, persons[1], "Ada")
    correction.merge_persons(store, persons[0], [persons[1]])
    split = correction.split_person(store, persons[0], members[persons[0]][:2]).person_id
    correction.move_face(store, members[persons[2]][0], split)
    correction.move_face(store, video_faces[0], split, force=True)  # a whole track
    correction.reject_face(store, members[persons[2]][1])
    correction.forget_person(store, persons[3], root / "thumbnails")

    # Locks: refused while held, taken over when stale.
    with store.lock("job", "first"):
        with pytest.raises(LockHeld):
            with store.lock("job", "second"):
                pass
        with store.lock("job", "third", stale_after_s=0.0):
            pass

    # Files replaced under their name (one with an identical copy elsewhere), copied, deleted.
    shutil.copy2(photos / "0001.png", root / "copy-of-0001.png")
    shutil.copy2(photos / "0002.png", photos / "copy-of-0002.png")
    assert len(register_folder(store, root).copies) == 2
    Image.new("RGB", (24, 24), (0, 200, 0)).save(photos / "0001.png")
    Image.new("RGB", (24, 24), (0, 0, 200)).save(photos / "0003.png")
    (photos / "0002.png").unlink()
    stat = (photos / "0004.png").stat()
    os.utime(photos / "0004.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched only
    scan = register_folder(store, photos)
    assert len(scan.replaced) == 2 and len(scan.missing) == 1
    assert len(store.missing_files()) == 2  # and the clip registered without a file
    store.copies_of_media_items([1, 2, 3])

    # Reports, asset checks, export and gallery.
    store.counts()
    store.person_summary()
    store.extraction_errors()
    store.faces_of_media_items()
    store.media_item_sizes()
    store.media_items_by_path()
    store.known_files()
    assert store.half_processed_media_items() == []
    assert store.faces_with_missing_person() == []
    assert store.embedding_problems()[1] == []
    export_persons(store, root / "export")
    write_gallery(store, root / "thumbnails", root / "gallery" / "index.html")

    # A person larger than one statement's parameters allow: merged, then split.
    add_photos(photos, 1, start=500)
    (big_item,) = register_folder(store, photos).added
    store.save_detection(big_item, [FACE] * BIG_PERSON_FACES, "stub", (24, 24))
    big_faces = [r.id for r in store.faces_without_embedding((big_item, big_item))]
    (big,) = store.apply_person_changes([big_faces], [], [])
    assert correction.merge_persons(store, split, [big]) == BIG_PERSON_FACES
    correction.split_person(store, split, big_faces[: BIG_PERSON_FACES // 2])

    # Another run registers a file between this one's check and its insert (planted here on the
    # same connection): the chunk is redone file by file, each in a savepoint.
    raced: list[bool] = []

    def meanwhile(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if not raced and statement.startswith('INSERT INTO "MediaFile"') and "raced.png" in str(parameters):
            raced.append(True)
            cursor.connection.execute(statement, parameters)

    event.listen(store.engine, "before_cursor_execute", meanwhile)
    assert store.register_media_files([(photos / "raced.png", "PNG", 1)])[0] is not None
    event.remove(store.engine, "before_cursor_execute", meanwhile)
    assert raced

    event.remove(store.engine, "before_execute", remember)
    store.dispose()
    return seen


@pytest.fixture(scope="module")
def dialect() -> Dialect:
    return sql_server_dialect()


@pytest.fixture(scope="module")
def compiled(captured: list[Captured], dialect: Dialect) -> dict[str, Captured]:
    """Distinct DML statements as SQL Server receives them."""
    dml = [c for c in captured if isinstance(c.statement, Select | Insert | Update | Delete)]
    # Nothing else may slip past the checks: the others are savepoints and DDL, checked below.
    others = [c.statement for c in captured if not isinstance(c.statement, Select | Insert | Update | Delete)]
    assert all(isinstance(s, ExecutableDDLElement | SAVEPOINTS) for s in others), others
    return {c.compile_for(dialect): c for c in dml}


def test_savepoints_are_tsql(captured: list[Captured], dialect: Dialect) -> None:
    """register_media_files' nested transactions. sqlglot does not model SAVE TRANSACTION: the
    text is held to the documented syntax instead."""
    savepoints = [c for c in captured if isinstance(c.statement, SAVEPOINTS)]
    assert savepoints
    for capture in savepoints:
        sql = capture.compile_for(dialect)
        if isinstance(capture.statement, ReleaseSavepointClause):
            # SQL Server has no RELEASE: the dialect sends nothing (it needs no connection to do so)
            dialect.do_release_savepoint(None, "sa_savepoint_1")  # type: ignore[arg-type]
        else:
            assert re.fullmatch(r"(SAVE|ROLLBACK) TRANSACTION \w+", sql), sql


def test_the_flow_issues_every_kind_of_statement(compiled: dict[str, Captured]) -> None:
    assert len(compiled) >= MIN_DISTINCT_STATEMENTS, len(compiled)
    verbs = {sql.split()[0] for sql in compiled}
    assert {"SELECT", "INSERT", "UPDATE", "DELETE"} <= verbs


def test_every_statement_is_valid_tsql(compiled: dict[str, Captured]) -> None:
    problems = []
    for sql in compiled:
        try:
            tree = parse_tsql(with_literals(sql))
        except (sqlglot.errors.ParseError, AssertionError) as error:
            problems.append(f"{error}: {sql}")
            continue
        if re.search(r"\bLIMIT\b", sql, re.IGNORECASE):
            problems.append(f"LIMIT: {sql}")
        if '"' in sql or "`" in sql or unquoted_identifiers(tree):
            problems.append(f"identifiers not in brackets {unquoted_identifiers(tree)}: {sql}")
    assert not problems, "\n".join(problems)


def test_paging_is_top(compiled: dict[str, Captured]) -> None:
    paged = [sql for sql in compiled if re.match(r"SELECT TOP \d+ ", sql)]
    # pending items and their ids, half-processed items, faces with a missing person
    assert len(paged) >= 4, paged


def test_a_new_id_is_read_with_scope_identity_never_output(
    compiled: dict[str, Captured], dialect: Dialect
) -> None:
    """SQL Server refuses OUTPUT without INTO on a table with an enabled trigger: new ids come
    from SCOPE_IDENTITY(), which SQLAlchemy's pyodbc dialect runs in the INSERT's own batch."""
    assert dialect.insert_returning is False and dialect.use_scope_identity is True  # type: ignore[attr-defined]
    inserted = set()
    for sql, capture in compiled.items():
        if isinstance(capture.statement, Insert):
            assert "OUTPUT" not in sql and "RETURNING" not in sql, sql
            inserted.add(capture.statement.table.name)  # type: ignore[attr-defined]
    # register_media_file reads both new ids; clustering and split read the new person's.
    assert {"MediaFile", "MediaItems", "Persons"} <= inserted


def test_no_statement_exceeds_sql_servers_parameter_limit(compiled: dict[str, Captured]) -> None:
    counts = {sql: bind_count(sql) for sql in compiled}
    too_many = {sql[:120]: n for sql, n in counts.items() if n > SQL_SERVER_MAX_PARAMETERS}
    assert not too_many
    # The big merge and split did run, in slices of 500 ids.
    assert max(counts.values()) >= 500


def test_ddl_is_valid_tsql_with_the_legacy_types(dialect: Dialect) -> None:
    expected = {
        "LargeBinary": "VARBINARY(max)",
        "UnicodeText": "NVARCHAR(max)",
        "Boolean": "BIT",
        "Integer": "INTEGER",
        "BigInteger": "BIGINT",
        "Float": "FLOAT",
        "DateTime": "DATETIME2",
    }
    for table in metadata.sorted_tables:
        ddl = str(CreateTable(table).compile(dialect=dialect))
        parse_tsql(ddl)
        assert not re.search(r"\bDATETIME\b|\bIMAGE\b|\bNTEXT\b", ddl), ddl
        for column in table.columns:
            spec = str(CreateColumn(column).compile(dialect=dialect))
            assert spec in ddl
            kind = type(column.type).__name__
            if kind == "Unicode":
                assert spec.startswith(f"[{column.name}] NVARCHAR({column.type.length}) "), spec  # type: ignore[attr-defined]
            elif kind == "String":  # ASCII codes and hashes; bound as VARCHAR by SQLAlchemy
                assert spec.startswith(f"[{column.name}] VARCHAR({column.type.length}) "), spec  # type: ignore[attr-defined]
            else:
                assert spec.startswith(f"[{column.name}] {expected[kind]} "), spec
        if "Id" in table.c:
            assert "[Id] INTEGER NOT NULL IDENTITY," in ddl
    faces = str(CreateTable(metadata.tables["Faces"]).compile(dialect=dialect))
    assert "[Embedding] VARBINARY(max) NULL" in faces and "[Notes] NVARCHAR(max) NULL" in faces


def test_indexes_are_valid_tsql_and_the_path_key_index_is_filtered(dialect: Dialect) -> None:
    statements = {
        str(index.name): str(CreateIndex(index).compile(dialect=dialect))
        for table in metadata.sorted_tables
        for index in table.indexes
    }
    assert len(statements) == 9
    for sql in statements.values():
        assert unquoted_identifiers(parse_tsql(sql)) == [], sql
    assert statements["IX_MediaFile_PathKey"] == (
        "CREATE UNIQUE INDEX [IX_MediaFile_PathKey] ON [MediaFile] ([PathKey]) WHERE [PathKey] IS NOT NULL"
    )


def test_db_init_adds_columns_with_valid_tsql(dialect: Dialect) -> None:
    statements = [
        add_column_sql(metadata.tables[t].c[c], dialect) for t, cs in PRODUCT_COLUMNS.items() for c in cs
    ]
    assert len(statements) == sum(len(cs) for cs in PRODUCT_COLUMNS.values()) > 10
    for sql in statements:
        # T-SQL has no ADD COLUMN; every added column is nullable so no row is rewritten.
        assert re.fullmatch(r"ALTER TABLE \[\w+\] ADD \[\w+\] [A-Z0-9()a-z, ]+ NULL", sql), sql
        assert isinstance(parse_tsql(sql), exp.Alter)
    assert "ALTER TABLE [Faces] ADD [IsRejected] BIT NULL" in statements
    assert "ALTER TABLE [Faces] ADD [Notes] NVARCHAR(max) NULL" in statements


def test_timestamps_are_datetime2_on_sql_server_only(dialect: Dialect) -> None:
    assert Timestamp.compile(dialect=dialect) == "DATETIME2"
    assert Timestamp.compile(dialect=sqlite.dialect()) == "DATETIME"
    assert Timestamp.compile(dialect=postgresql.dialect()) == "TIMESTAMP WITHOUT TIME ZONE"


def test_the_sql_server_engine_uses_fast_executemany() -> None:
    engine = make_engine("mssql+pyodbc://u:p@sqlserver:1433/Media?driver=ODBC+Driver+18+for+SQL+Server")
    assert engine.dialect.name == "mssql" and engine.dialect.driver == "pyodbc"
    assert engine.dialect.fast_executemany is True  # type: ignore[attr-defined]
    # DATABASE_URL as the README writes it gives the driver this ODBC string.
    (connection_string,), _ = engine.dialect.create_connect_args(engine.url)  # type: ignore[misc]
    assert connection_string == (
        "DRIVER={ODBC Driver 18 for SQL Server};Server=sqlserver,1433;Database=Media;UID=u;PWD=p"
    )


# PWD values as written in an ODBC string: braces protect ";" and "}" is doubled inside them.
@pytest.mark.parametrize("pwd", ["S3cret", "{a;b=c}}d}", "p+q%41 r&s=t", "{ends;with}}}"])
def test_sql_connection_string_reaches_the_driver_unchanged(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pwd: str
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the working folder
    for name in ("DATABASE_URL", "FACE_ASSETS_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    raw = (
        f"Driver={{ODBC Driver 18 for SQL Server}};Server=tcp:db,1433;Database=Media;UID=sa;PWD={pwd};"
        "Encrypt=yes"
    )
    monkeypatch.setenv("SQL_CONNECTION_STRING", raw)
    url = get_settings().resolved_database_url()
    assert url.startswith("mssql+pyodbc:///?odbc_connect=")
    engine = make_engine(url)
    assert engine.dialect.fast_executemany is True  # type: ignore[attr-defined]
    (connection_string,), options = engine.dialect.create_connect_args(engine.url)  # type: ignore[misc]
    assert connection_string == raw and options == {}
