"""Sensors: new MediaItems rows become batches and runs; new files in the media folder get registered."""

import bisect
import hashlib
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
from sqlalchemy.exc import DBAPIError

from face_assets.assets.leases import dead_batch_run
from face_assets.core.batch import ALL_KEY, batch_key, covered_up_to, parse_batch_key, plan_batches
from face_assets.core.settings import Settings, get_settings
from face_assets.core.storage.schema import utcnow
from face_assets.core.storage.store import DatabaseUnavailable, FaceStore, unavailable
from face_assets.jobs import process_batch_job, register_media_job
from face_assets.partitions import PARTITIONS_NAME, media_item_partitions
from face_assets.resources import FaceStoreResource

# Batches already covered that hold pending rows: at most this many are looked at per tick.
LEFTOVER_BATCHES = 1000


def _latest_run(instance: dg.DagsterInstance, key: str) -> dg.DagsterRun | None:
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=process_batch_job.name, tags={"dagster/partition": key}), limit=1
    )
    return records[0].dagster_run if records else None


def batches_with_pending(
    store: FaceStore, keys: list[str], covered: int, retry_before: datetime
) -> list[str]:
    """The batches up to `covered` that hold a pending row, one indexed look-up per such batch
    (the first pending row after the previous batch): however many rows wait in failed batches,
    a row committed late into any batch is found."""
    ranges = sorted(r for r in map(parse_batch_key, keys) if r is not None)
    found: list[str] = []
    above = 0
    while above < covered and len(found) < LEFTOVER_BATCHES:
        first = store.pending_media_item_ids(above, covered, limit=1, unreadable_before=retry_before)
        if not first:
            break
        index = bisect.bisect_right(ranges, (first[0], sys.maxsize)) - 1
        if index < 0 or ranges[index][1] < first[0]:
            above = first[0]  # between batches: cannot happen with contiguous ranges
            continue
        found.append(batch_key(*ranges[index]))
        above = ranges[index][1]
    return found


def leftover_requests(context: dg.SensorEvaluationContext, leftover_keys: list[str]) -> list[dg.RunRequest]:
    """Batches to run again for pending rows inside them: a row committed after its batch ran, or
    a batch whose run never started. A failed batch is left for the user to rerun, not retried
    in a loop: its rows wait visibly in that failed partition."""
    requests = []
    for key in leftover_keys:
        run = _latest_run(context.instance, key)
        if run is None or run.status == dg.DagsterRunStatus.SUCCESS:
            after = run.run_id if run else "none"
            requests.append(dg.RunRequest(partition_key=key, run_key=f"{key}:after:{after}"))
        elif run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            context.log.warning(f"media items wait in failed batch {key} (run {run.run_id}): rerun it")
    return requests


def fail_dead_batch_runs(context: dg.SensorEvaluationContext, store: FaceStore) -> list[str]:
    """Batch runs whose process died (a worker killed, a machine gone) stay STARTED in Dagster
    for good: each whose batch lock shows its holder gone is marked failed, saying why, and its
    media items wait in that failed batch for a rerun. The runs already started, no more."""
    started = dg.RunsFilter(job_name=process_batch_job.name, statuses=[dg.DagsterRunStatus.STARTED])
    failed = []
    for run in context.instance.get_runs(filters=started):
        why = dead_batch_run(store, run, utcnow())
        if why:
            key = run.tags.get("dagster/partition")
            message = f"batch {key}: the process running it is gone ({why}); rerun the batch"
            context.instance.report_run_failed(run, message=message)
            context.log.warning(f"run {run.run_id} failed: {message}")
            failed.append(run.run_id)
    return failed


def build_new_media_items_sensor(settings: Settings) -> dg.SensorDefinition:
    @dg.sensor(
        name="new_media_items_sensor",
        job=process_batch_job,
        minimum_interval_seconds=settings.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Unprocessed MediaItems rows become batches (dynamic partitions) and their runs.",
    )
    def new_media_items_sensor(
        context: dg.SensorEvaluationContext, face_store: FaceStoreResource
    ) -> dg.SensorResult | dg.SkipReason:
        current = get_settings()
        partitions = context.instance.get_dynamic_partitions(PARTITIONS_NAME)
        keys = [k for k in partitions if k != ALL_KEY]
        covered = max(int(context.cursor or 0), covered_up_to(keys))
        limit = current.batch_size * current.max_batches_per_tick
        try:
            store = face_store.get_store()
            fresh = store.pending_media_item_ids(above=covered, limit=limit)
            retry_before = utcnow() - timedelta(seconds=current.unreadable_retry_s)
            leftovers = batches_with_pending(store, keys, covered, retry_before)
            fail_dead_batch_runs(context, store)
        except (DatabaseUnavailable, DBAPIError) as error:
            down = unavailable(error)
            if down is None:
                raise
            # A database that is down for a while is not the sensor's failure: the tick says
            # why in one line and the next one tries again; nothing is requested meanwhile.
            context.log.warning(str(down))
            return dg.SkipReason(f"database unavailable: {down}")
        new_keys = [batch_key(*r) for r in plan_batches(fresh, covered, current.batch_size)]
        requests = [dg.RunRequest(partition_key=key, run_key=key) for key in new_keys]
        requests += leftover_requests(context, leftovers)
        if not requests:
            return dg.SkipReason(f"no unprocessed media items beyond Id {covered}")
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[media_item_partitions.build_add_request(new_keys)]
            if new_keys
            else [],
            cursor=str(covered_up_to(new_keys) or covered),
        )

    return new_media_items_sensor


def folder_signature(folder: Path) -> str:
    """A digest of every visible file's path, size and modification time below `folder`."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            path = Path(root, name)
            try:
                stat = path.stat()
            except OSError:
                continue  # vanished between listing and stat
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def build_media_folder_sensor(settings: Settings) -> dg.SensorDefinition:
    @dg.sensor(
        name="media_folder_sensor",
        job=register_media_job,
        minimum_interval_seconds=settings.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Registers new files in the media folder (FACE_ASSETS_MEDIA_DIR).",
    )
    def media_folder_sensor(
        context: dg.SensorEvaluationContext, face_store: FaceStoreResource
    ) -> dg.SensorResult | dg.SkipReason:
        folder = face_store.media_folder()  # the folder the media_items asset registers
        if folder is None:
            return dg.SkipReason("no media folder configured (FACE_ASSETS_MEDIA_DIR)")
        if not folder.is_dir():
            return dg.SkipReason(f"media folder {folder} does not exist")
        # Any added, changed or removed file changes the signature; copies that keep old
        # modification times are caught too, since the path list changes.
        signature = folder_signature(folder)
        if signature == context.cursor:
            return dg.SkipReason(f"nothing changed in {folder}")
        config = {"ops": {"media_items": {"config": {"folder": str(folder)}}}}
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"folder:{signature}", run_config=config)], cursor=signature
        )

    return media_folder_sensor
