"""Automatic processing: rows inserted by another application become batches, runs and persons."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import select

from face_assets.assets.leases import batch_lock_name
from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.person import PERSONS_LOCK, update_persons
from face_assets.core.settings import get_settings
from face_assets.core.storage.schema import FacesTable, LocksTable, MediaItemsTable, utcnow
from face_assets.core.storage.store import FaceStore, LockHeld
from face_assets.definitions import build_definitions
from face_assets.resources import FaceStoreResource
from face_assets.runs import materialize_pipeline
from face_assets.sensors import build_new_media_items_sensor
from face_assets_tests.conftest import IDENTITIES, insert_returning_id, sql, url_of


@pytest.fixture
def library(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, stub_people: Path, stub_models: None
):
    """An application database whose persons come from 5 photos of each identity; `later` holds
    other photos of the same people, from the validation split. The stub models: what is tested
    here is the batches, runs and locks around them."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    FaceStore.from_url(db_url, upgrade=True).dispose()  # `face-assets db init`
    monkeypatch.setenv("THUMBNAIL_SAVE_PATH", str(tmp_path / "thumbnails"))
    monkeypatch.setenv("FACE_ASSETS_BATCH_SIZE", "4")
    known = tmp_path / "known"
    later: dict[str, list[Path]] = {}
    for identity in IDENTITIES:
        (known / identity).mkdir(parents=True)
        for photo in sorted((stub_people / "train" / identity).glob("*.jpg"))[4:9]:
            shutil.copy(photo, known / identity / photo.name)
        later[identity] = sorted((stub_people / "val" / identity).glob("*.jpg"))[:2]
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_pipeline(known, instance=instance).success
    return FaceStore.from_url(db_url), instance, later


def insert_rows(store: FaceStore, photos: list[Path], ids: list[int] | None = None) -> list[int]:
    """Rows as another application writes them: plain SQL, legacy columns only."""
    added = []
    with store.engine.begin() as conn:
        for index, photo in enumerate(photos):
            file_id = insert_returning_id(
                conn,
                'INSERT INTO "MediaFile" ("FilePath", "FileName", "Extensions") VALUES (:p, :n, :e)',
                {"p": str(photo.parent), "n": photo.name, "e": "jpg"},
            )
            if ids:
                conn.execute(
                    sql(conn, 'INSERT INTO "MediaItems" ("Id", "MediaFileId", "Name", "IsFacesExtracted") '
                              "VALUES (:i, :f, :n, :done)"),
                    {"i": ids[index], "f": file_id, "n": photo.name, "done": False},
                )  # fmt: skip
                added.append(ids[index])
            else:
                added.append(
                    insert_returning_id(
                        conn,
                        'INSERT INTO "MediaItems" ("MediaFileId", "Name", "IsFacesExtracted") '
                        "VALUES (:f, :n, :done)",
                        {"f": file_id, "n": photo.name, "done": False},
                    )
                )
    return added


def tick(instance: dg.DagsterInstance, cursor: str | None = None):
    sensor = build_new_media_items_sensor(get_settings())
    resources = {"face_store": FaceStoreResource()}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        result = sensor(context)
    if isinstance(result, dg.SensorResult):
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def execute(instance: dg.DagsterInstance, partition_key: str) -> dg.ExecuteInProcessResult:
    job = build_definitions().resolve_job_def("process_batch_job")
    return job.execute_in_process(partition_key=partition_key, instance=instance, raise_on_error=False)


def faces_of(store: FaceStore, item_ids: list[int]) -> list[dict]:
    with store.engine.connect() as conn:
        query = select(FacesTable).where(FacesTable.c.MediaItemId.in_(item_ids))
        return [dict(r) for r in conn.execute(query).mappings()]


def person_of_identity(store: FaceStore, identity: str) -> int:
    faces = store.faces_of_media_items()
    items = [
        i for p, i in store.media_items_by_path().items() if p.parent.name == identity and "known" in str(p)
    ]
    persons = {f["person_id"] for i in items for f in faces.get(i, []) if f["person_id"]}
    assert len(persons) == 1, (identity, persons)
    return persons.pop()


def test_rows_inserted_by_another_application_get_faces_and_persons(library, tmp_path: Path) -> None:
    store, instance, later = library
    new_photos = [later[identity][0] for identity in IDENTITIES]
    ids = insert_rows(store, new_photos)

    result = tick(instance)

    assert isinstance(result, dg.SensorResult)
    assert len(result.run_requests) == 1  # 3 rows, batches of 4
    key = result.run_requests[0].partition_key
    assert int(key.split("-")[1]) == max(ids) and int(key.split("-")[0]) <= min(ids)
    assert execute(instance, key).success
    for identity, item_id in zip(IDENTITIES, ids, strict=True):
        faces = faces_of(store, [item_id])
        assert faces, identity
        largest = max(faces, key=lambda f: f["DetectionScore"])
        assert (tmp_path / "thumbnails" / largest["ThumbnailPath"]).is_file()
        assert largest["Embedding"] is not None
        # A batch matches on the persons' means alone: a face it is not sure of waits for the
        # clustering, never joins someone else.
        assert largest["PersonId"] in (None, person_of_identity(store, identity))
    assert store.counts()["media_items_pending"] == 0
    update_persons(store, ClusterParams())  # the nightly clustering
    for identity, item_id in zip(IDENTITIES, ids, strict=True):
        largest = max(faces_of(store, [item_id]), key=lambda f: f["DetectionScore"])
        assert largest["PersonId"] == person_of_identity(store, identity), identity

    again = tick(instance, result.cursor)
    assert isinstance(again, dg.SkipReason)


def test_a_row_committed_late_inside_a_finished_batch_is_picked_up(library) -> None:
    store, instance, later = library
    first, second, third = (later[identity][0] for identity in IDENTITIES)
    insert_rows(store, [first, third], ids=[1000, 1002])
    result = tick(instance)
    (request,) = result.run_requests
    assert request.partition_key == "000000001-000001002" or request.partition_key.endswith("000001002")
    assert execute(instance, request.partition_key).success

    insert_rows(store, [second], ids=[1001])  # a lower Id, committed after its batch ran
    late = tick(instance, result.cursor)

    assert isinstance(late, dg.SensorResult)
    assert [r.partition_key for r in late.run_requests] == [request.partition_key]
    assert execute(instance, request.partition_key).success
    assert store.counts()["media_items_pending"] == 0


def test_a_failed_batch_waits_visibly_and_its_rerun_processes_every_row_once(
    library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, instance, later = library
    ids = insert_rows(store, [later[identity][0] for identity in IDENTITIES])
    # A model error injected through configuration: a real model, no files, no package index.
    monkeypatch.setenv("FACE_ASSETS_DETECTOR", "retinaface-mobilenet")
    monkeypatch.setenv("FACE_ASSETS_MODELS_DIR", str(tmp_path / "no-models"))
    monkeypatch.setenv("FACE_ASSETS_MODELS_OFFLINE", "true")
    result = tick(instance)
    key = result.run_requests[0].partition_key

    failed = execute(instance, key)

    assert not failed.success
    assert sorted(store.pending_media_item_ids()) == sorted(ids)
    waiting = tick(instance, result.cursor)
    assert isinstance(waiting, dg.SkipReason)  # not retried in a loop: the failed batch waits

    monkeypatch.setenv("FACE_ASSETS_DETECTOR", "stub")
    monkeypatch.delenv("FACE_ASSETS_MODELS_DIR")
    monkeypatch.delenv("FACE_ASSETS_MODELS_OFFLINE")
    assert execute(instance, key).success
    assert execute(instance, key).success  # a second rerun changes nothing
    with store.engine.connect() as conn:
        rows = conn.execute(select(MediaItemsTable).where(MediaItemsTable.c.Id.in_(ids))).mappings().all()
    faces = faces_of(store, ids)
    for row in rows:
        own = [f for f in faces if f["MediaItemId"] == row["Id"]]
        assert row["IsFacesExtracted"] and row["FaceCount"] == len(own) >= 1
        assert len({f["BoundingBox"] for f in own}) == len(own)  # each face written once


def test_a_clustering_refuses_to_start_while_another_is_running(library) -> None:
    store, instance, later = library
    insert_rows(store, [p for photos in later.values() for p in photos])
    persons_before = store.counts()["persons"]
    job = build_definitions().resolve_job_def("recluster_persons_job")

    with store.lock(PERSONS_LOCK, "a clustering started elsewhere"):
        refused = job.execute_in_process(instance=instance, raise_on_error=False)

    assert not refused.success
    failure = refused.get_step_failure_events()[0].step_failure_data.error
    assert "running elsewhere" in str(failure)
    assert store.counts()["persons"] == persons_before
    assert job.execute_in_process(instance=instance).success


def test_two_clusterings_at_once_never_both_write(library, tmp_path: Path) -> None:
    store, _, _ = library
    with store.engine.begin() as conn:  # start over: every face unassigned, no person
        conn.execute(sql(conn, 'UPDATE "Faces" SET "PersonId" = NULL, "PersonAssignedBy" = NULL'))
        conn.execute(sql(conn, 'DELETE FROM "Persons"'))
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def cluster() -> None:
        barrier.wait()
        try:
            outcomes.append(update_persons(FaceStore.from_url(url_of(store)), ClusterParams()))
        except LockHeld as error:
            outcomes.append(error)

    threads = [threading.Thread(target=cluster) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(outcomes) == 2
    assert store.counts()["persons"] == len(IDENTITIES)  # not twice as many
    assert all(p["faces"] >= 3 for p in store.person_summary())


def test_a_second_run_of_a_batch_at_work_elsewhere_is_refused_and_touches_nothing(library) -> None:
    store, instance, later = library
    ids = insert_rows(store, [later[identity][0] for identity in IDENTITIES])
    key = tick(instance).run_requests[0].partition_key

    # The first run of the batch is at work (its lock held by a live process, this one).
    with store.lock(batch_lock_name(key), "Dagster run first-run"):
        refused = execute(instance, key)

    assert not refused.success
    failure = refused.get_step_failure_events()[0].step_failure_data.error
    assert f"batch {key} is running elsewhere (held by Dagster run first-run" in str(failure)
    assert sorted(store.pending_media_item_ids()) == sorted(ids) and faces_of(store, ids) == []
    assert execute(instance, key).success
    assert store.pending_media_item_ids() == []


def test_a_batch_run_whose_process_died_is_marked_failed_and_its_rerun_finishes_it(library) -> None:
    store, instance, later = library
    ids = insert_rows(store, [later[identity][0] for identity in IDENTITIES])
    result = tick(instance)
    key = result.run_requests[0].partition_key
    job = build_definitions().resolve_job_def("process_batch_job")
    dead = instance.create_run_for_job(
        job_def=job, tags={"dagster/partition": key}, status=dg.DagsterRunStatus.STARTED
    )
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that no longer runs: the worker killed in the batch's step
    with store.engine.begin() as conn:
        conn.execute(
            LocksTable.insert().values(
                Name=batch_lock_name(key),
                Owner=f"Dagster run {dead.run_id}",
                AcquiredAt=utcnow(),
                Host=socket.gethostname(),
                Pid=gone.pid,
                HeartbeatAt=utcnow(),
            )  # fmt: skip
        )

    assert isinstance(tick(instance, result.cursor), dg.SkipReason)  # not retried in a loop

    failed = instance.get_run_by_id(dead.run_id)
    assert failed is not None and failed.status == dg.DagsterRunStatus.FAILURE
    messages = [e.message for e in instance.all_logs(dead.run_id)]
    assert any(f"batch {key}: the process running it is gone (its process {gone.pid}" in m for m in messages)
    assert sorted(store.pending_media_item_ids()) == sorted(ids)  # waiting in the failed batch

    rerun = execute(instance, key)
    assert rerun.success
    assert store.pending_media_item_ids() == [] and store.lock_holder(batch_lock_name(key)) is None
    faces = faces_of(store, ids)
    assert len({(f["MediaItemId"], f["BoundingBox"]) for f in faces}) == len(faces) >= len(ids)
