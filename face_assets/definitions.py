"""The one Dagster code location of face_assets.

Definitions are built when Dagster loads the code location, not at import: the sensor
interval and the schedule's cron come from the environment then.
"""

import dagster as dg

from face_assets.assets import ALL_ASSETS
from face_assets.checks import ALL_CHECKS
from face_assets.core.settings import get_settings
from face_assets.jobs import process_batch_job, recluster_persons_job, register_media_job
from face_assets.resources import (
    ClusteringResource,
    FaceModelsResource,
    FaceStoreResource,
    ThumbnailStoreResource,
)
from face_assets.schedules import build_recluster_schedule
from face_assets.sensors import build_media_folder_sensor, build_new_media_items_sensor


def make_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources read nothing until a run starts: configuration comes from the environment then."""
    return {
        "face_store": FaceStoreResource(),
        "face_models": FaceModelsResource(),
        "clustering": ClusteringResource(),
        "thumbnails": ThumbnailStoreResource(),
    }


def build_definitions() -> dg.Definitions:
    settings = get_settings()
    return dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[process_batch_job, recluster_persons_job, register_media_job],
        sensors=[build_new_media_items_sensor(settings), build_media_folder_sensor(settings)],
        schedules=[build_recluster_schedule(settings)],
        resources=make_resources(),
        # A run's steps run one after another in the run's own process: the models are loaded
        # once per process (a Celery worker keeps them for every later batch) rather than once
        # per step in a subprocess each, and a Celery worker's process may not start children.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
