"""A large library in seconds and a real Dagster batch run over it, for the tests and for
scripts/benchmark_scale.py: rows written straight into the store's tables (real encoded
embeddings, persons with their sums), the stub models, and counters of what the SQL statements
returned and of the work SQLite did for them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
from numpy.typing import NDArray
from PIL import Image
from sqlalchemy import Connection, Engine, Table, event, text

from face_assets.assets import ALL_ASSETS
from face_assets.checks import ALL_CHECKS
from face_assets.core.batch import batch_key
from face_assets.core.storage.codecs import EMBEDDING_DIM, encode_embedding
from face_assets.core.storage.schema import FacesTable, MediaFileTable, MediaItemsTable, PersonsTable
from face_assets.core.storage.store import FaceStore
from face_assets.core.vision.stub import STUB
from face_assets.core.vision.types import DetectedFace, RGBImage
from face_assets.jobs import process_batch_job
from face_assets.partitions import PARTITIONS_NAME
from face_assets.resources import (
    ClusteringResource,
    FaceModelsResource,
    FaceStoreResource,
    ThumbnailStoreResource,
)
from face_assets_devtools.stub_people import stripes

CHUNK = 5000  # rows per INSERT statement while filling
FACES_PER_PERSON = 20
UNASSIGNED_EVERY = 5  # faces a clustering left waiting: one in five


def unit_vectors(count: int, seed: int = 0) -> NDArray[np.float32]:
    vectors = np.random.default_rng(seed).standard_normal((count, EMBEDDING_DIM), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def insert_rows(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """An INSERT of many rows handed to the driver as one executemany: SQLAlchemy's per-row
    parameter processing (and its Python-side column defaults) would take most of the time."""
    columns = list(rows[0])
    quote = conn.dialect.identifier_preparer.quote
    style = conn.dialect.paramstyle
    marks = {"qmark": "?", "format": "%s", "pyformat": "%({})s", "named": ":{}"}[style]
    statement = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join(marks.format(c) for c in columns)})"
    )
    if style in ("qmark", "format"):
        conn.exec_driver_sql(statement, [tuple(row[c] for c in columns) for row in rows])
    else:
        conn.exec_driver_sql(statement, rows)


def fill_library(store: FaceStore, faces: int, persons: int | None = None, seed: int = 0) -> None:
    """`faces` processed media items with one embedded face each (a file path that does not
    exist: no step of a later batch opens them), as a clustering leaves them: every
    UNASSIGNED_EVERY-th face waits unassigned, the others are in `persons` persons (by default
    one per FACES_PER_PERSON faces) with their embedding sums. Rows carry no timestamps."""
    persons = persons or max(faces // FACES_PER_PERSON, 1)
    vectors = unit_vectors(faces, seed)
    rows = np.arange(faces)
    assigned = rows % UNASSIGNED_EVERY != UNASSIGNED_EVERY - 1
    owner = np.where(assigned, (rows // FACES_PER_PERSON) % persons, -1)
    sums = np.zeros((persons, EMBEDDING_DIM), dtype=np.float64)
    counts = np.bincount(owner[assigned], minlength=persons)
    for start in range(0, faces, CHUNK):  # np.add.at row by row would take seconds
        block = slice(start, min(start + CHUNK, faces))
        for person in np.unique(owner[block][assigned[block]]):
            sums[person] += vectors[block][owner[block] == person].sum(axis=0)
    with store.engine.begin() as conn:
        for start in range(0, persons, CHUNK):
            insert_rows(conn, PersonsTable, [
                {"Id": p + 1, "Name": f"Person {p + 1}", "Type": "cluster", "EmbeddingCount": int(counts[p]),
                 "EmbeddingSum": encode_embedding(sums[p].astype(np.float32))}
                for p in range(start, min(start + CHUNK, persons))
            ])  # fmt: skip
        for start in range(0, faces, CHUNK):
            part = range(start, min(start + CHUNK, faces))
            insert_rows(conn, MediaFileTable, [
                {"Id": r + 1, "FilePath": "/library", "FileName": f"{r:07d}.jpg", "PathKey": f"{r:064d}",
                 "MediaFormat": "JPEG"} for r in part
            ])  # fmt: skip
            insert_rows(conn, MediaItemsTable, [
                {"Id": r + 1, "MediaFileId": r + 1, "Name": f"{r:07d}.jpg", "IsFacesExtracted": True,
                 "FaceCount": 1, "ImageWidth": 640, "ImageHeight": 480} for r in part
            ])  # fmt: skip
            insert_rows(conn, FacesTable, [
                {"Id": r + 1, "MediaItemId": r + 1, "BoundingBox": "[10.0, 10.0, 90.0, 90.0]",
                 "Embedding": encode_embedding(vectors[r]), "EmbeddingModel": "stub",
                 "ThumbnailPath": f"library/{r:07d}.jpg", "Name": f"{r:07d}.jpg",
                 "PersonId": int(owner[r]) + 1 if assigned[r] else None,
                 "PersonAssignedBy": "cluster" if assigned[r] else "noise",
                 "IsUserVerified": False, "IsRejected": False}
                for r in part
            ])  # fmt: skip
    fix_sequences(store)


def fix_sequences(store: FaceStore) -> None:
    """Rows written with explicit ids leave PostgreSQL's sequences behind; move them past."""
    if store.engine.dialect.name != "postgresql":
        return
    with store.engine.begin() as conn:
        for table in ("MediaFile", "MediaItems", "Faces", "Persons"):
            conn.execute(
                text(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'Id'), "
                     f"(SELECT MAX(\"Id\") FROM \"{table}\"))")
            )  # fmt: skip


FACES_PER_PHOTO = 2
PALETTE = ((220, 30, 30), (30, 200, 30), (30, 60, 220), (220, 200, 20), (200, 30, 200), (20, 200, 210))


def add_batch(store: FaceStore, folder: Path, items: int, tag: str = "batch") -> tuple[int, int]:
    """`items` new photos (real small JPEG files, each with FACES_PER_PHOTO squares of colour
    that the stub detector takes for faces) registered as media items; their Id range."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(tag) + items)
    ids = []
    for n in range(items):
        path = folder / f"{tag}-{n:04d}.jpg"
        pixels = np.full((120, 160, 3), 200, dtype=np.uint8)
        for k in range(FACES_PER_PHOTO):
            colour = np.array(PALETTE[rng.integers(len(PALETTE))])
            pixels[20:80, 10 + 80 * k : 70 + 80 * k] = np.clip(colour + stripes(60), 0, 255)
        Image.fromarray(pixels).save(path, quality=90)
        item = store.register_media_file(path, "JPEG", path.stat().st_size)
        assert item is not None
        ids.append(item)
    return min(ids), max(ids)


class TwoFacesDetector:
    """Two faces at fixed places in every photo or frame, whatever it shows."""

    name = "two-faces"
    loaded = True

    def load(self) -> None:
        pass

    def detect(self, image: RGBImage) -> list[DetectedFace]:
        return [
            DetectedFace((10.0 + 70 * k, 20.0, 60.0 + 70 * k, 80.0), 0.99, ((30.0 + 70 * k, 40.0),) * 5)
            for k in range(2)
        ]


@dataclass
class Reads:
    """What SQL statements returned: per statement text, how often it ran and its rows."""

    statements: int = 0
    rows: int = 0
    by_statement: dict[str, list[int]] = field(default_factory=dict)
    plans: dict[str, list[str]] = field(default_factory=dict)  # SQLite's EXPLAIN QUERY PLAN lines

    def scans(self, tables: tuple[str, ...]) -> dict[str, list[str]]:
        """Statements whose plan reads one of `tables` whole (a SCAN, not a SEARCH by an index)."""
        found = {}
        for statement, plan in self.plans.items():
            whole = [line for line in plan if any(line.startswith(f"SCAN {t}") for t in tables)]
            if whole:
                found[statement] = whole
        return found

    def largest(self, count: int = 5) -> list[tuple[int, str]]:
        totals = sorted(((sum(r), s) for s, r in self.by_statement.items()), reverse=True)
        return totals[:count]


@contextmanager
def counting_reads(engine: Engine) -> Iterator[Reads]:
    """Counts every statement the engine runs and, for each SELECT, the rows it returns: the
    statement is run again as SELECT count(*) over it, in the same transaction (SQLite's cursor
    reports no row count for a SELECT). Keeps the plan of each SELECT, UPDATE and DELETE.
    SQLite only; it doubles the reads' cost."""
    reads = Reads()

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        reads.statements += 1
        verb = statement.lstrip()[:6].upper()
        if many or verb not in ("SELECT", "UPDATE", "DELETE"):
            return
        text = " ".join(statement.split())
        counter = conn.connection.driver_connection.cursor()
        try:
            reads.plans[text] = [
                str(line[-1]) for line in counter.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
            ]
            if verb == "SELECT":
                rows = counter.execute(f"SELECT count(*) FROM ({statement})", parameters).fetchone()[0]
                reads.rows += rows
                reads.by_statement.setdefault(text, []).append(rows)
        finally:
            counter.close()

    event.listen(engine, "after_cursor_execute", after)
    try:
        yield reads
    finally:
        event.remove(engine, "after_cursor_execute", after)


@contextmanager
def counting_work(engine: Engine) -> Iterator[list[int]]:
    """Thousands of SQLite virtual machine instructions the engine's statements run: the work
    of a statement, rows it reads and does not return included (an index walked past the
    batch's rows shows here, not in the rows returned). SQLite only."""
    work = [0]
    touched: list[Any] = []

    def tick() -> int:
        work[0] += 1
        return 0  # go on

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        driver = conn.connection.driver_connection
        if driver not in touched:
            driver.set_progress_handler(tick, 1000)
            touched.append(driver)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield work
    finally:
        event.remove(engine, "before_cursor_execute", before)
        for driver in touched:
            driver.set_progress_handler(None, 0)


@dataclass
class BatchRun:
    result: dg.ExecuteInProcessResult
    seconds: float


def run_job(
    store: FaceStore,
    job: dg.UnresolvedAssetJobDefinition,
    thumbnails: Path,
    partition_key: str | None = None,
    instance: dg.DagsterInstance | None = None,
) -> BatchRun:
    """One of the project's jobs (its assets and their checks) through `store`, so that a
    listener on its engine sees every statement, with stub models."""
    instance = instance or dg.DagsterInstance.ephemeral()
    if partition_key is not None and not instance.has_dynamic_partition(PARTITIONS_NAME, partition_key):
        instance.add_dynamic_partitions(PARTITIONS_NAME, [partition_key])

    class ThisStore(FaceStoreResource):
        def get_store(self) -> FaceStore:
            return store

        def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
            pass  # the caller's store stays open

    resources = {
        "face_store": ThisStore(),
        "face_models": FaceModelsResource(detector=STUB, embedder=STUB),
        "clustering": ClusteringResource(),
        "thumbnails": ThumbnailStoreResource(
            path=str(thumbnails), thumbnail_px=32, gallery_path=str(thumbnails.parent / "gallery")
        ),
    }
    defs = dg.Definitions(
        assets=ALL_ASSETS, asset_checks=ALL_CHECKS, jobs=[job], resources=resources,
        executor=dg.in_process_executor,
    )  # fmt: skip
    started = time.perf_counter()
    result = defs.resolve_job_def(job.name).execute_in_process(
        partition_key=partition_key, instance=instance, raise_on_error=False
    )
    return BatchRun(result, time.perf_counter() - started)


def run_batch(
    store: FaceStore, first: int, last: int, thumbnails: Path, instance: dg.DagsterInstance | None = None
) -> BatchRun:
    """process_batch_job on the batch of media items first..last, with stub models."""
    return run_job(store, process_batch_job, thumbnails, batch_key(first, last), instance)
