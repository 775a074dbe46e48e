"""A batch run costs what its batch costs: its steps and checks read the batch's rows, not the
library's; the library is checked with the clustering and by the batch `all`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from face_assets.checks import LIBRARY_CHECKS
from face_assets.core.batch import ALL_KEY
from face_assets.core.storage.store import FaceStore, encode_embedding
from face_assets.jobs import process_batch_job, recluster_persons_job
from face_assets_devtools.library import (
    FACES_PER_PHOTO,
    add_batch,
    counting_reads,
    counting_work,
    fill_library,
    run_batch,
    run_job,
)
from face_assets_tests.conftest import sql

LIBRARY_FACES = 100_000
SMALL_LIBRARY_FACES = 10_000
PERSONS = 250  # as many in both libraries: matching reads one row per person, by design
BATCH_ITEMS = 10
BATCH_FACES = BATCH_ITEMS * FACES_PER_PHOTO
# Tables that grow with the library: a batch step may look rows up in them, never read them whole.
LIBRARY_TABLES = ("Faces", "MediaItems", "MediaFile")


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def libraries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, tuple[FaceStore, Path]]]:
    """SQLite libraries of 10 000 and 100 000 processed faces, PERSONS persons each."""
    made = {}
    for faces in (SMALL_LIBRARY_FACES, LIBRARY_FACES):
        root = tmp_path_factory.mktemp(f"library{faces}")
        store = FaceStore.from_url(f"sqlite:///{root / 'faces.db'}", upgrade=True)
        fill_library(store, faces, persons=PERSONS)
        made[faces] = (store, root)
    yield made
    for store, _ in made.values():
        store.dispose()


def test_a_batch_run_reads_its_batch_not_the_library(libraries: dict[int, tuple[FaceStore, Path]]) -> None:
    store, root = libraries[LIBRARY_FACES]
    first, last = add_batch(store, root / "photos", BATCH_ITEMS)
    with counting_reads(store.engine) as reads:
        run = run_batch(store, first, last, root / "thumbnails")
    assert run.result.success
    checks = check_results(run.result)
    assert set(checks) == {"embeddings_are_unit_512", "no_half_processed_media_items"}
    assert all(c.passed for c in checks.values())
    assert checks["embeddings_are_unit_512"].metadata["embeddings_checked"].value == BATCH_FACES
    assert checks["embeddings_are_unit_512"].metadata["checked"].value == f"media items {first}-{last}"
    assert store.counts()["faces_embedded"] == LIBRARY_FACES + BATCH_FACES

    # No statement reads a table that grows with the library whole (SQLite's plan says SCAN).
    assert reads.scans(LIBRARY_TABLES) == {}
    # Rows returned: the batch's, plus one per person (the means a batch is matched against).
    from_persons = sum(sum(r) for s, r in reads.by_statement.items() if ' FROM "Persons"' in s)
    assert from_persons <= PERSONS
    assert reads.rows - from_persons <= 10 * BATCH_FACES, reads.largest()


def test_a_batch_run_does_the_same_work_in_a_library_ten_times_larger(
    libraries: dict[int, tuple[FaceStore, Path]],
) -> None:
    """Rows read and not returned count too: an index walked past the batch's rows (every
    unassigned face of the library, to find the batch's) shows in SQLite's instruction count."""
    work = {}
    for faces, (store, root) in libraries.items():
        first, last = add_batch(store, root / "photos", BATCH_ITEMS, tag="same-work")
        with counting_work(store.engine) as counted:
            assert run_batch(store, first, last, root / "thumbnails").result.success
        work[faces] = counted[0]
    assert work[LIBRARY_FACES] <= 1.3 * work[SMALL_LIBRARY_FACES] + 5, work


def test_the_library_check_reads_the_library(libraries: dict[int, tuple[FaceStore, Path]]) -> None:
    """What the embedding check read on every batch before it looked at the batch only: the
    counter sees a library-wide read."""
    store, _ = libraries[LIBRARY_FACES]
    with counting_reads(store.engine) as reads:
        checked, problems = store.embedding_problems()
    assert checked >= LIBRARY_FACES and not problems
    assert reads.rows >= LIBRARY_FACES and reads.scans(("Faces",))


def test_batch_checks_see_their_batch_and_the_library_is_checked_apart(db_url: str, tmp_path: Path) -> None:
    store = FaceStore.from_url(db_url, upgrade=True)
    fill_library(store, 200)
    with store.engine.begin() as conn:  # another application's broken row, in the first batch
        conn.execute(sql(conn, 'UPDATE "Faces" SET "Embedding" = :e WHERE "Id" = 5'),
                     {"e": encode_embedding(np.ones(512, np.float32))})  # fmt: skip
    first, last = add_batch(store, tmp_path / "photos", 3)
    instance = dg.DagsterInstance.ephemeral()

    fresh = run_batch(store, first, last, tmp_path / "thumbnails", instance)
    assert fresh.result.success and all(c.passed for c in check_results(fresh.result).values())

    old = run_batch(store, 1, 200, tmp_path / "thumbnails", instance)
    failed = check_results(old.result)["embeddings_are_unit_512"]
    assert not failed.passed and "face 5: norm" in str(failed.metadata["problems"].value)
    # Blocking: the batch's faces are not matched against persons past a broken embedding.
    assert not old.result.success

    # The batch `all` (the command line's) checks the whole library.
    everything = run_job(store, process_batch_job, tmp_path / "thumbnails", ALL_KEY, instance)
    found = check_results(everything.result)["embeddings_are_unit_512"]
    assert not found.passed and found.metadata["embeddings_checked"].value == 200 + 3 * 2
    assert found.metadata["checked"].value == "library"

    # The nightly clustering checks the library; its checks do not block the gallery.
    nightly = run_job(store, recluster_persons_job, tmp_path / "thumbnails", instance=instance)
    library = check_results(nightly.result)
    assert set(library) == {key.name for check in LIBRARY_CHECKS for key in check.check_keys}
    assert not library["library_embeddings_are_unit_512"].passed
    assert library["library_has_no_half_processed_media_items"].passed
    assert nightly.result.success  # person_clusters and person_gallery materialised
    store.dispose()
