"""Batches in parallel on Celery workers (deploy/dagster-celery.yaml): the sensor makes the
batches, the daemon's run queue launches them side by side, two worker processes with working
folders of their own run them; each media item is processed exactly once, and a worker killed
in the middle of a batch leaves it failed and pending until a rerun finishes it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text

from face_assets.core.media_item import register_folder
from face_assets.core.storage.store import FaceStore
from face_assets.runs import materialize_pipeline
from face_assets_devtools.deployment import Deployment, exactly_once, wait_for
from face_assets_devtools.servers import RedisServer, ThrowawayServer

pytestmark = pytest.mark.slow

BATCH_JOB = "process_batch_job"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def deployment(
    tmp_path: Path, postgresql_server: ThrowawayServer, redis_server: RedisServer, models_dir: Path
) -> Iterator[Deployment]:
    app_url = postgresql_server.new_database()
    FaceStore.from_url(app_url, upgrade=True).dispose()  # `face-assets db init`
    deployment = Deployment(tmp_path / "deployment", postgresql_server, redis_server, app_url)
    yield deployment
    deployment.close()


def batch_runs(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    return list(instance.get_run_records(filters=dg.RunsFilter(job_name=BATCH_JOB)))


def all_succeeded(instance: dg.DagsterInstance, count: int) -> list[dg.RunRecord] | None:
    records = batch_runs(instance)
    done = [r for r in records if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS]
    failed = [r for r in records if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]
    assert not failed, [r.dagster_run.run_id for r in failed]
    return records if len(done) >= count else None


def query(store: FaceStore, sql: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def assert_processed_exactly_once(store: FaceStore, thumbnails: Path) -> None:
    assert query(store, 'SELECT COUNT(*) FROM "Faces"') > 0
    assert exactly_once(store, thumbnails) == {
        "pending": 0, "items_with_faces_not_once": 0, "faces_twice": 0,
        "thumbnails_missing": 0, "thumbnails_stray": 0,
    }  # fmt: skip


def persons_by_photo(store: FaceStore) -> set[frozenset[tuple[str, str]]]:
    """Each person as the set of its faces, a face named by its photo's file and its box."""
    sql = (
        'SELECT f."PersonId", m."FileName", f."BoundingBox" FROM "Faces" f '
        'JOIN "MediaItems" i ON i."Id" = f."MediaItemId" JOIN "MediaFile" m ON m."Id" = i."MediaFileId" '
        'WHERE f."PersonId" IS NOT NULL'
    )
    persons: dict[int, set[tuple[str, str]]] = {}
    with store.engine.connect() as conn:
        for person, name, box in conn.execute(text(sql)):
            persons.setdefault(person, set()).add((name, box))
    return {frozenset(faces) for faces in persons.values()}


def test_batches_run_side_by_side_on_two_workers_each_item_once_and_persons_as_one_process(
    deployment: Deployment, photo_folder: Path, tmp_path: Path
) -> None:
    store = FaceStore.from_url(deployment.app_url)
    added = register_folder(store, photo_folder).added  # rows, as another application inserts
    deployment.start_worker("worker-1")
    deployment.start_worker("worker-2")
    deployment.start_daemon()
    deployment.start_sensor()
    instance = deployment.instance()
    batches = -(-len(added) // 4)

    records = wait_for(
        f"{batches} batch runs to succeed", lambda: all_succeeded(instance, batches), 600, deployment
    )

    assert len(records) == batches  # one run per batch: none launched twice
    assert {r.dagster_run.tags["dagster/partition"] for r in records} == {
        k for k in instance.get_dynamic_partitions("media_items") if k != "all"
    }
    spans = sorted((r.start_time, r.end_time) for r in records)
    overlapping = [b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)]
    assert any(overlapping), spans  # batches ran side by side
    for worker in ("worker-1", "worker-2"):
        assert "execute_job" in deployment.log(worker) and "succeeded" in deployment.log(worker), worker
    assert_processed_exactly_once(store, deployment.thumbnails)
    # Each worker process loaded the models for its first batch and kept them for the next.
    reused = [
        event.asset_materialization.metadata["model_reused"].value
        for event in instance.fetch_materializations(dg.AssetKey("detected_faces"), limit=100).records
        if event.asset_materialization is not None
    ]
    assert sorted(reused) == [False, False] + [True] * (batches - 2)

    deployment.launch_clustering()  # on a worker too
    wait_for(
        "the clustering run to succeed",
        lambda: [
            r
            for r in instance.get_runs(filters=dg.RunsFilter(job_name="recluster_persons_job"))
            if r.status == dg.DagsterRunStatus.SUCCESS
        ],
        300,
        deployment,
    )
    alone = f"sqlite:///{tmp_path / 'one-process.db'}"
    one_process = materialize_pipeline(
        photo_folder,
        database_url=alone,
        thumbnail_dir=tmp_path / "one-process",
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert one_process.success
    reference = FaceStore.from_url(alone)
    assert persons_by_photo(store) == persons_by_photo(reference) != set()
    instance.dispose()
    store.dispose()
    reference.dispose()


def test_a_worker_killed_mid_batch_leaves_it_failed_and_pending_and_a_rerun_finishes_it_once(
    deployment: Deployment, celebrity_folder: Path, tmp_path: Path
) -> None:
    library = tmp_path / "library"
    shutil.copytree(celebrity_folder / "train", library)
    store = FaceStore.from_url(deployment.app_url)
    added = register_folder(store, library).added
    deployment.env["FACE_ASSETS_BATCH_SIZE"] = str(len(added))  # one batch
    deployment.start_worker("worker-1")
    deployment.start_daemon()
    deployment.start_sensor()
    instance = deployment.instance()
    processed = 'SELECT COUNT(*) FROM "MediaItems" WHERE "IsFacesExtracted" = true'

    def midway() -> int:
        done = query(store, processed)
        return done if 5 <= done < len(added) - 5 else 0

    wait_for("the batch to be half done", midway, 600, deployment)
    deployment.kill("worker-1")

    (killed,) = batch_runs(instance)
    key = killed.dagster_run.tags["dagster/partition"]
    failed = wait_for(
        "the killed run to be marked failed",
        lambda: (
            (run := instance.get_run_by_id(killed.dagster_run.run_id))
            and run.status == dg.DagsterRunStatus.FAILURE
            and run
        ),
        120,
        deployment,
    )
    assert failed
    messages = [e.message for e in instance.all_logs(killed.dagster_run.run_id)]
    assert any(f"batch {key}: the process running it is gone" in m for m in messages), messages[-5:]
    left = query(store, 'SELECT COUNT(*) FROM "MediaItems" WHERE "IsFacesExtracted" = false')
    assert 0 < left < len(added)  # pending, in a batch visible as failed

    deployment.start_worker("worker-2")  # the rerun goes to another machine
    deployment.launch_batch(key)
    wait_for("the rerun to succeed", lambda: all_succeeded_after(instance, killed), 600, deployment)

    assert_processed_exactly_once(store, deployment.thumbnails)
    assert len(batch_runs(instance)) == 2
    instance.dispose()
    store.dispose()


def all_succeeded_after(instance: dg.DagsterInstance, killed: dg.RunRecord) -> bool:
    runs = [r.dagster_run for r in batch_runs(instance) if r.dagster_run.run_id != killed.dagster_run.run_id]
    return bool(runs) and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
