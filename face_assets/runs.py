"""Runs the Dagster materialisations in-process: what the `face-assets` command drives."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from face_assets.definitions import ALL_ASSETS, make_resources
from face_assets.resources import FaceStoreResource, ThumbnailStoreResource


def instance_for_cli() -> dg.DagsterInstance:
    """The user's instance when DAGSTER_HOME is set, so CLI runs show in the UI."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def materialize_pipeline(
    folder: Path | None = None,
    *,
    database_url: str = "",
    thumbnail_dir: Path | None = None,
    instance: dg.DagsterInstance | None = None,
    raise_on_error: bool = True,
    log_level: str = "WARNING",
) -> dg.ExecuteInProcessResult:
    """Registers `folder` (if given) and materialises every asset in dependency order."""
    resources = make_resources()
    if database_url:
        resources["face_store"] = FaceStoreResource(database_url=database_url)
    if thumbnail_dir is not None:
        resources["thumbnails"] = ThumbnailStoreResource(path=str(thumbnail_dir))
    run_config = {
        "ops": {"media_items": {"config": {"folder": str(folder) if folder else ""}}},
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }
    return dg.materialize(
        ALL_ASSETS,
        resources=resources,
        run_config=run_config,
        instance=instance or instance_for_cli(),
        raise_on_error=raise_on_error,
    )


def step_metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    """Materialisation metadata per asset, as plain values."""
    out: dict[str, dict[str, object]] = {}
    for asset in ALL_ASSETS:
        name = asset.key.to_user_string()
        for materialization in result.asset_materializations_for_node(name):
            out[name] = {key: getattr(v, "value", v) for key, v in materialization.metadata.items()}
    return out
