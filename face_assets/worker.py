"""The Celery app of the face_assets workers: `celery -A face_assets.worker worker`.

Each task is one whole Dagster run (a batch, a clustering), sent by Dagster's CeleryRunLauncher
(deploy/dagster-celery.yaml) and executed in the worker's process with the run's steps one
after another: the worker keeps its models loaded from one batch to the next. The broker and
the task states come from FACE_ASSETS_CELERY_BROKER_URL and FACE_ASSETS_CELERY_BACKEND_URL; a
worker also needs DAGSTER_HOME (the same Dagster storage as the daemon), DATABASE_URL and
THUMBNAIL_SAVE_PATH (a folder every worker and the webserver reach). Nothing connects at
import: Celery connects when the worker starts.
"""

from __future__ import annotations

from celery import Celery
from dagster_celery.config import DEFAULT_CONFIG
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task, create_task

from face_assets.core.settings import get_settings

QUEUE = "dagster"  # the launcher's default queue

# A worker takes one run at a time and reserves no other: a batch waits in the queue for the
# next free worker instead of behind a busy one. A task is acknowledged when it starts, so a
# worker killed mid-run does not get its run started twice; the run is marked failed (the sensor
# sees its batch lock's holder gone) and a rerun finishes it. Acknowledged early, a task no
# longer counts against the prefetch limit, so without disable_prefetch (Redis brokers) a busy
# worker would reserve the next run and hold it until its own ended: batches of a few seconds
# then ran one after another on one worker while the other waited.
WORKER_CONFIG = {
    **DEFAULT_CONFIG,
    "worker_prefetch_multiplier": 1,
    "task_acks_late": False,
    "worker_disable_prefetch": True,
}


def make_worker_app() -> Celery:
    settings = get_settings()
    if not settings.celery_broker_url or not settings.celery_backend_url:
        raise SystemExit(
            "FACE_ASSETS_CELERY_BROKER_URL and FACE_ASSETS_CELERY_BACKEND_URL must be set, as for the "
            "daemon (e.g. redis://127.0.0.1:6379/0 and redis://127.0.0.1:6379/1)"
        )
    app = make_app(
        {
            "broker": settings.celery_broker_url,
            "backend": settings.celery_backend_url,
            "include": [],
            "config_source": WORKER_CONFIG,
            "task_default_queue": QUEUE,
        }
    )
    create_task(app)
    create_execute_job_task(app)
    create_resume_job_task(app)
    return app


app = make_worker_app()
