"""A scratch SQLite copy of the application tables, read from the source without writing to it.

`--dry-run` runs the real materialisations against such a copy: the user sees what a run would
do, and the source database (and its folder) stay byte-for-byte as they were.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import create_engine, insert, inspect, select
from sqlalchemy.engine import make_url

from face_assets.core.storage.engine import make_engine
from face_assets.core.storage.schema import metadata

_CHUNK = 5000


def scratch_copy(source_url: str, folder: Path) -> str:
    """Copies the tables at `source_url` into `folder`/scratch.db; returns the copy's URL."""
    target = folder / "scratch.db"
    url = make_url(source_url)
    if url.get_backend_name() == "sqlite":
        source = Path(url.database or "")
        if url.database and source.is_file():
            # immutable: no lock files beside the database; only safe without a pending WAL.
            mode = "mode=ro" if Path(f"{source}-wal").exists() else "mode=ro&immutable=1"
            reader = sqlite3.connect(f"file:{source.resolve()}?{mode}", uri=True)
            writer = sqlite3.connect(target)
            try:
                reader.backup(writer)
            finally:
                writer.close()
                reader.close()
        return f"sqlite:///{target}"
    _copy_rows(source_url, f"sqlite:///{target}")
    return f"sqlite:///{target}"


def _copy_rows(source_url: str, target_url: str) -> None:
    """Table by table, the columns both sides know, in chunks: SELECTs only on the source."""
    source = create_engine(source_url)
    target = make_engine(target_url)
    try:
        metadata.create_all(target)
        present = set(inspect(source).get_table_names())
        for table in metadata.sorted_tables:
            if table.name not in present:
                continue
            known = {c["name"] for c in inspect(source).get_columns(table.name)}
            columns = [c for c in table.columns if c.name in known]
            with source.connect() as reader, target.begin() as writer:
                result = reader.execution_options(yield_per=_CHUNK).execute(select(*columns))
                for rows in result.mappings().partitions():
                    writer.execute(insert(table), [dict(r) for r in rows])
    finally:
        source.dispose()
        target.dispose()
