"""The nightly clustering over all faces."""

import dagster as dg

from face_assets.core.settings import Settings
from face_assets.jobs import recluster_persons_job


def build_recluster_schedule(settings: Settings) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="recluster_schedule",
        job=recluster_persons_job,
        cron_schedule=settings.recluster_cron,
        execution_timezone="UTC",
        description="Clusters all faces into persons (FACE_ASSETS_RECLUSTER_CRON, default nightly).",
    )
