"""Engines for every supported dialect, and the idempotent schema upgrade."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from sqlalchemy import Column, Engine, MetaData, Table, create_engine, event, inspect, text
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.schema import CreateIndex, CreateTable

from face_assets.core.storage.connection import safe_url
from face_assets.core.storage.errors import DatabaseUrlError
from face_assets.core.storage.schema import LATER_COLUMNS, PRODUCT_COLUMNS, metadata

logger = logging.getLogger(__name__)


def odbc_to_url(connection_string: str) -> str:
    """A raw ODBC string (`Driver={...};Server=...`) as an `mssql+pyodbc` SQLAlchemy URL that
    hands the driver exactly that string. `%` and `+` are escaped once more because SQLAlchemy
    2.0 decodes `odbc_connect` again after parsing the URL (sqlalchemy#11250): a `+` in a
    password would otherwise reach the driver as a space."""
    return "mssql+pyodbc:///?odbc_connect=" + quote_plus(
        connection_string.replace("%", "%25").replace("+", "%2B")
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # Embeddings are 2 KB blobs: large pages keep them out of overflow chains (DESIGN.md §2).
    cursor.execute("PRAGMA page_size=16384")
    cursor.execute("PRAGMA journal_mode=WAL")
    # WAL with NORMAL sync survives a killed process whole; a power cut can lose only the last
    # commits, whose items are then pending again and redone. FULL would fsync every item.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


# What a user can write, for an error message about what they wrote.
URL_EXAMPLES = (
    "sqlite:///data/face_assets.db, postgresql+psycopg://user:password@host/db, "
    "mssql+pyodbc://user:password@host/db?driver=ODBC+Driver+18+for+SQL+Server"
)
# The Python package of each driver the product supports, by its SQLAlchemy module name.
DRIVER_PACKAGES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "pyodbc": "pyodbc"}


def parse_url(url: str) -> URL:
    """`url` parsed, or DatabaseUrlError saying what is wrong (the value itself is not echoed:
    it may hold a password)."""
    try:
        return make_url(url)
    except ArgumentError:
        raise DatabaseUrlError(f"DATABASE_URL is not a database URL; write one like {URL_EXAMPLES}") from None


def _create(url: str, parsed: URL, **kwargs: Any) -> Engine:
    try:
        return create_engine(url, **kwargs)
    except NoSuchModuleError:
        raise DatabaseUrlError(
            f"DATABASE_URL {safe_url(parsed)}: SQLAlchemy knows no database {parsed.drivername!r}; "
            f"write one like {URL_EXAMPLES}"
        ) from None
    except ModuleNotFoundError as error:
        module = (error.name or "").split(".")[0]
        package = DRIVER_PACKAGES.get(module, module)
        raise DatabaseUrlError(
            f"DATABASE_URL {safe_url(parsed)} needs the Python driver {module!r}, which is not "
            f"installed: `pip install {package}`, or name an installed driver "
            "(postgresql+psycopg, mssql+pyodbc, mysql+pyodbc)"
        ) from None


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database or an in-memory one."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def make_engine(url: str) -> Engine:
    """An engine for `url`; a SQLite file's folder is created, SQL Server gets fast_executemany."""
    parsed = parse_url(url)
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        file = sqlite_file(url)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
        engine = _create(url, parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "mssql":
        kwargs["fast_executemany"] = True
    kwargs["pool_pre_ping"] = True
    engine = _create(url, parsed, **kwargs)
    if engine.dialect.name == "mssql":
        # New ids come from SCOPE_IDENTITY() in the INSERT's batch, not OUTPUT inserted.[Id]:
        # SQL Server refuses OUTPUT without INTO on a table with a trigger, and the media
        # application's tables may have some.
        engine.dialect.insert_returning = False
    return engine


def missing_schema(engine: Engine) -> list[str]:
    """Tables and columns the product needs that the database lacks, e.g. ["Faces.Landmarks"]."""
    inspector = inspect(engine)
    existing = set(inspector.get_table_names())
    missing: list[str] = []
    for table in metadata.sorted_tables:
        if table.name not in existing:
            missing.append(table.name)
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        missing += [f"{table.name}.{c.name}" for c in table.columns if c.name not in present]
    return missing


def add_column_sql(column: Column[Any], dialect: Dialect) -> str:
    """The statement `upgrade_schema` adds a missing product column with: nullable and without a
    default, so that existing rows are not rewritten."""
    preparer = dialect.identifier_preparer
    return (
        f"ALTER TABLE {preparer.format_table(column.table)} "
        f"ADD {preparer.format_column(column)} {column.type.compile(dialect=dialect)} NULL"
    )


def upgrade_schema(engine: Engine) -> list[str]:
    """Creates missing tables, adds missing product columns and indexes; never touches rows.

    Returns what it changed, e.g. ["Faces.DetectionScore", "IX_Faces_PersonId"].
    """
    changes: list[str] = []
    existing = set(inspect(engine).get_table_names())
    if engine.dialect.name == "sqlite":
        changes += _never_reuse_ids(engine, existing)
    missing_tables = [t for t in metadata.sorted_tables if t.name not in existing]
    if missing_tables:
        metadata.create_all(engine, tables=missing_tables)
        changes += [t.name for t in missing_tables]
    inspector = inspect(engine)
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            if table in missing_tables:
                continue
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for name in PRODUCT_COLUMNS.get(table.name, ()) + LATER_COLUMNS.get(table.name, ()):
                if name in present:
                    continue
                conn.execute(text(add_column_sql(table.c[name], engine.dialect)))
                changes.append(f"{table.name}.{name}")
            indexes = {ix["name"] for ix in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in indexes:
                    conn.execute(CreateIndex(index))
                    changes.append(str(index.name))
    if changes:
        logger.info("schema upgraded: %s", ", ".join(changes))
    return changes


def _never_reuse_ids(engine: Engine, existing: set[str]) -> list[str]:
    """Rebuilds each SQLite table made without AUTOINCREMENT (by an earlier release or another
    tool), whose deleted highest Id would be handed out again; returns "<table>.Id"."""
    rebuilt: list[str] = []
    for table in metadata.sorted_tables:
        if table.name not in existing or not table.dialect_options["sqlite"]["autoincrement"]:
            continue
        with engine.connect() as conn:
            ddl = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table.name,)
            ).scalar_one()
        if "AUTOINCREMENT" not in ddl.upper():
            rebuilt += [f"{table.name}.Id", *_rebuild_sqlite_table(engine, table)]
    return rebuilt


def _rebuild_sqlite_table(engine: Engine, table: Table) -> list[str]:
    """SQLite's way to change a table's definition: a new table, the rows copied with their Ids,
    the old one dropped and the new one renamed, in one transaction with foreign keys off (the
    other tables' references then point at the new table by its name). Columns the product does
    not know (another application's) are kept; returns the product's columns it added."""
    present = inspect(engine).get_columns(table.name)
    scratch = MetaData()
    for other in metadata.sorted_tables:
        other.to_metadata(scratch)  # the foreign keys' targets, for the DDL
    new = table.to_metadata(scratch, name=f"{table.name}__rebuilt")
    for column in present:
        if column["name"] not in new.c:
            new.append_column(Column(column["name"], column["type"], nullable=True))
    names = ", ".join(engine.dialect.identifier_preparer.quote(c["name"]) for c in present)
    quoted = engine.dialect.identifier_preparer.quote
    raw = engine.raw_connection()
    sqlite = raw.driver_connection
    assert sqlite is not None
    level = sqlite.isolation_level
    sqlite.isolation_level = None  # BEGIN and COMMIT below are ours
    try:
        sqlite.execute("PRAGMA foreign_keys=OFF")
        sqlite.execute("BEGIN IMMEDIATE")
        try:
            sqlite.execute(str(CreateTable(new).compile(dialect=engine.dialect)))
            sqlite.execute(
                f"INSERT INTO {quoted(new.name)} ({names}) SELECT {names} FROM {quoted(table.name)}"
            )
            sqlite.execute(f"DROP TABLE {quoted(table.name)}")
            sqlite.execute(f"ALTER TABLE {quoted(new.name)} RENAME TO {quoted(table.name)}")
            sqlite.execute("COMMIT")
        except BaseException:
            sqlite.execute("ROLLBACK")
            raise
        finally:
            sqlite.execute("PRAGMA foreign_keys=ON")
    finally:
        sqlite.isolation_level = level
        raw.close()
    logger.info("table %s rebuilt so that its ids are never reused", table.name)
    had = {c["name"] for c in present}
    return [f"{table.name}.{c.name}" for c in table.columns if c.name not in had]
