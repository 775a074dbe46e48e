"""Who is working on what: a run holds the persons lock while it writes persons, and the lock
of its batch while one of the batch's steps runs, so that two runs (on one machine or on
several workers) never work on one batch at once and a run whose process died is found."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import dagster as dg

from face_assets.core.storage.errors import LockHeld
from face_assets.core.storage.locks import LOCK_STALE_S
from face_assets.core.storage.store import FaceStore

RUN_OWNER = "Dagster run "
BATCH_LOCK = "batch "


def run_owner(context: dg.AssetExecutionContext) -> str:
    return f"{RUN_OWNER}{context.run.run_id}"


def batch_lock_name(partition_key: str) -> str:
    return f"{BATCH_LOCK}{partition_key}"


def fail_runs_taken_over(context: dg.AssetExecutionContext, store: FaceStore) -> None:
    """A run killed while it held a lock stays STARTED in Dagster for good: once its lock is
    taken over (its process is gone), it is marked failed, saying why."""
    for holder, why in store.taken_over_locks():
        context.log.warning(f"took over the lock {holder.name} from {holder.owner}: {why}")
        if not holder.owner.startswith(RUN_OWNER):
            continue
        run = context.instance.get_run_by_id(holder.owner.removeprefix(RUN_OWNER))
        if run is not None and not run.is_finished:
            context.instance.report_run_failed(run, message=f"{holder.name} was taken over: {why}")


@contextmanager
def batch_lease(context: dg.AssetExecutionContext, store: FaceStore) -> Iterator[None]:
    """Holds the batch's lock for one step; a second run of the same batch is refused at once
    (the first one is working on these media items) rather than doing the work twice."""
    name = batch_lock_name(context.partition_key)
    try:
        with store.lock(name, run_owner(context)):
            fail_runs_taken_over(context, store)
            yield
    except LockHeld as error:
        raise dg.Failure(description=str(error)) from None


def dead_batch_run(store: FaceStore, run: dg.DagsterRun, now: datetime) -> str:
    """Why a STARTED batch run is known to be dead (its process gone, or no heartbeat from its
    step for LOCK_STALE_S), or "" when it may still be working."""
    key = run.tags.get("dagster/partition")
    if not key:
        return ""
    holder = store.lock_holder(batch_lock_name(key))
    if holder is None or holder.owner != f"{RUN_OWNER}{run.run_id}":
        return ""
    return holder.gone(LOCK_STALE_S, now)
