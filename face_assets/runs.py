"""Runs the Dagster materialisations in-process: what the `face-assets` command drives.

The command line processes the whole library as the batch `all`; the sensor makes Id-range
batches. Either way the same assets run.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from face_assets.assets import ALL_ASSETS, BATCH_ASSETS, media_items, person_clusters, person_gallery
from face_assets.checks import ALL_CHECKS
from face_assets.core.batch import ALL_KEY
from face_assets.core.storage.locks import process_alive
from face_assets.definitions import make_resources
from face_assets.partitions import PARTITIONS_NAME
from face_assets.resources import FaceStoreResource, ThumbnailStoreResource
from face_assets.steps import STEPS

logger = logging.getLogger(__name__)

# The database of one in-process run, handed to its resource by name (see materialize_pipeline).
RUN_DATABASE_URL = "FACE_ASSETS_RUN_DATABASE_URL"
_STEP_ASSETS: dict[str, list[dg.AssetsDefinition]] = {
    "register": [media_items],
    "detect": [BATCH_ASSETS[0]],
    "thumbnails": [BATCH_ASSETS[1]],
    "embed": [BATCH_ASSETS[2]],
    "match": [BATCH_ASSETS[3]],
    "cluster": [person_clusters],
    "gallery": [person_gallery],
}


# The project's Dagster instance settings, the file the README has users copy into DAGSTER_HOME.
INSTANCE_TEMPLATE = Path(__file__).with_name("dagster.yaml")


def instance_for_cli() -> dg.DagsterInstance:
    """The user's instance when DAGSTER_HOME is set, so CLI runs show in the UI."""
    home = os.environ.get("DAGSTER_HOME")
    if home:
        write_instance_settings(Path(home))
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def write_instance_settings(home: Path) -> bool:
    """Gives a DAGSTER_HOME without dagster.yaml the project's, as the README has users copy it:
    Dagster would warn on every command that it has none, and without it `dagster dev` on this
    home would show the first-run pop-up, send telemetry and not queue a second clustering run
    behind the first. A dagster.yaml already there is never touched. True when it wrote one."""
    target = home / "dagster.yaml"
    if not home.is_absolute() or not home.is_dir() or target.exists():
        return False  # a relative or missing DAGSTER_HOME is Dagster's to report
    settings = INSTANCE_TEMPLATE.read_bytes()
    try:
        # Written aside and linked into place: a command started beside this one finds the
        # whole file or none, and one of the two writes it.
        with tempfile.NamedTemporaryFile("wb", dir=home, prefix=".dagster.yaml.", delete=False) as aside:
            aside.write(settings)
        try:
            os.link(aside.name, target)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            with target.open("xb") as file:
                file.write(settings)
        finally:
            os.unlink(aside.name)
    except FileExistsError:
        return False
    except OSError as error:  # a read-only home: Dagster runs on its defaults, and says so
        logger.info("could not write %s: %s", target, error)
        return False
    logger.warning("DAGSTER_HOME had no dagster.yaml: wrote the project's settings to %s", target)
    return True


# Who runs a command-line run: a run whose process is gone is marked failed by the next one.
HOST_TAG, PID_TAG = "face_assets/host", "face_assets/pid"


def fail_abandoned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Runs the command line started in a process that is gone (killed, the machine rebooted)
    would stay STARTED in Dagster's history for good: each is marked failed, saying why."""
    host = socket.gethostname()
    started = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED], tags={HOST_TAG: host})
    failed = []
    for run in instance.get_runs(filters=started):
        pid = int(run.tags.get(PID_TAG, "0") or 0)
        if pid and not process_alive(pid):
            instance.report_run_failed(run, message=f"its process {pid} on {host} is gone (killed)")
            failed.append(run.run_id)
    return failed


def ensure_all_partition(instance: dg.DagsterInstance) -> None:
    if not instance.has_dynamic_partition(PARTITIONS_NAME, ALL_KEY):
        instance.add_dynamic_partitions(PARTITIONS_NAME, [ALL_KEY])


@dataclass
class PipelineRun:
    results: list[dg.ExecuteInProcessResult] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)

    def metadata(self) -> dict[str, dict[str, object]]:
        """Materialisation metadata per asset, as plain values."""
        out: dict[str, dict[str, object]] = {}
        for result in self.results:
            for asset in ALL_ASSETS:
                name = asset.key.to_user_string()
                for event in result.asset_materializations_for_node(name):
                    out[name] = {key: getattr(v, "value", v) for key, v in event.metadata.items()}
        return out


def materialize_pipeline(
    folder: Path | None = None,
    *,
    database_url: str | None = None,
    thumbnail_dir: Path | None = None,
    instance: dg.DagsterInstance | None = None,
    steps: Sequence[str] = STEPS,
    log_level: str = "WARNING",
    cluster_mode: str | None = None,
) -> PipelineRun:
    """Registers `folder` (if given), then materialises the chosen steps in dependency order:
    the batch assets for the whole library (partition `all`), then the clustering."""
    instance = instance or instance_for_cli()
    fail_abandoned_runs(instance)
    resources = make_resources()
    if database_url:
        # Through the environment, not the value: Dagster keeps a resource's config in every
        # run's snapshot, and a URL carries its password.
        resources["face_store"] = FaceStoreResource(database_url=dg.EnvVar(RUN_DATABASE_URL))
    if thumbnail_dir is not None:
        # A run on its own database (evaluation, dry run) keeps its gallery beside its thumbnails.
        resources["thumbnails"] = ThumbnailStoreResource(
            path=str(thumbnail_dir), gallery_path=str(thumbnail_dir.parent / "gallery")
        )
    loggers = {"console": {"config": {"log_level": log_level}}}
    run = PipelineRun()

    def materialize(names: list[str], partition_key: str | None = None, ops: dict | None = None) -> None:
        selection = [a.key for name in names for a in _STEP_ASSETS[name]]
        if not selection:
            return
        run.results.append(
            dg.materialize(
                [*ALL_ASSETS, *ALL_CHECKS],
                selection=selection,
                partition_key=partition_key,
                resources=resources,
                run_config={"loggers": loggers, **({"ops": ops} if ops else {})},
                instance=instance,
                tags={HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())},
            )
        )

    saved = os.environ.get(RUN_DATABASE_URL)
    if database_url:
        os.environ[RUN_DATABASE_URL] = database_url
    try:
        _materialize_steps(materialize, steps, folder, cluster_mode, instance)
    finally:
        if saved is None:
            os.environ.pop(RUN_DATABASE_URL, None)
        else:
            os.environ[RUN_DATABASE_URL] = saved
    return run


def _materialize_steps(
    materialize: Callable[..., None],
    steps: Sequence[str],
    folder: Path | None,
    cluster_mode: str | None,
    instance: dg.DagsterInstance,
) -> None:
    if "register" in steps:
        materialize(["register"], ops={"media_items": {"config": {"folder": str(folder) if folder else ""}}})
    batch_steps = [s for s in ("detect", "thumbnails", "embed", "match") if s in steps]
    if batch_steps:
        ensure_all_partition(instance)
        materialize(batch_steps, partition_key=ALL_KEY)
    if "cluster" in steps:
        materialize(["cluster"], ops={"person_clusters": {"config": {"mode": cluster_mode}}})
    if "gallery" in steps:
        materialize(["gallery"])
