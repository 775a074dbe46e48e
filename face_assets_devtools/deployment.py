"""A multi-worker deployment on this machine, for the tests and scripts/benchmark_parallel.py:
Dagster's storage on PostgreSQL (deploy/dagster-celery.yaml as it is shipped), a Redis broker,
the Dagster daemon (run queue and sensors), and Celery workers. Each worker is a process of its
own with its own working folder and DAGSTER_HOME, as on separate machines; what they share is
what machines share: the databases, the broker and the thumbnail folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import dagster as dg
from sqlalchemy import make_url, text

from face_assets.core.storage.store import FaceStore
from face_assets_devtools.servers import RedisServer, ThrowawayServer

ROOT = Path(__file__).resolve().parents[1]
DAGSTER_YAML = ROOT / "deploy" / "dagster-celery.yaml"
BIN = Path(sys.executable).parent
T = TypeVar("T")


class Deployment:
    def __init__(
        self,
        root: Path,
        postgres: ThrowawayServer,
        redis: RedisServer,
        app_url: str,
        max_runs: int = 2,
        batch_size: int = 4,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.app_url = app_url
        self.thumbnails = root / "shared" / "thumbnails"
        self.thumbnails.mkdir(parents=True)
        dagster_db = make_url(postgres.new_database())
        self.env = {
            "DAGSTER_PG_HOST": str(dagster_db.host),
            "DAGSTER_PG_PORT": str(dagster_db.port),
            "DAGSTER_PG_DB": str(dagster_db.database),
            "DAGSTER_PG_USERNAME": str(dagster_db.username),
            "DAGSTER_PG_PASSWORD": str(dagster_db.password),
            "FACE_ASSETS_CELERY_BROKER_URL": redis.url(0),
            "FACE_ASSETS_CELERY_BACKEND_URL": redis.url(1),
            "FACE_ASSETS_MAX_RUNS": str(max_runs),
            "DATABASE_URL": app_url,
            "THUMBNAIL_SAVE_PATH": str(self.thumbnails),
            "FACE_ASSETS_GALLERY_DIR": str(root / "shared" / "gallery"),
            "FACE_ASSETS_BATCH_SIZE": str(batch_size),
            "FACE_ASSETS_SENSOR_INTERVAL_S": "5",
            **(extra_env or {}),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.home = self._machine("daemon")

    def _machine(self, name: str) -> Path:
        """A working folder with its own DAGSTER_HOME, as a machine of its own has."""
        folder = self.root / name
        (folder / "dagster_home").mkdir(parents=True)
        shutil.copy(DAGSTER_YAML, folder / "dagster_home" / "dagster.yaml")
        (folder / "workspace.yaml").write_text("load_from:\n  - python_module: face_assets.definitions\n")
        return folder / "dagster_home"

    def _environ(self, home: Path) -> dict[str, str]:
        return {**os.environ, **self.env, "DAGSTER_HOME": str(home)}

    def _start(self, name: str, command: list[str], home: Path) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - the process keeps it open
        process = subprocess.Popen(
            command, cwd=home.parent, env=self._environ(home), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed whole, as a machine going down
        )  # fmt: skip
        self.processes[name] = process
        return process

    def start_daemon(self) -> None:
        self._start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], self.home)

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        home = self._machine(name)
        command = [
            str(BIN / "celery"), "-A", "face_assets.worker", "worker", "--pool", "prefork",
            "--concurrency", "1", "-n", f"{name}@%h", "-Q", "dagster", "--loglevel", "INFO",
        ]  # fmt: skip
        return self._start(name, command, home)

    def dagster(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The `dagster` command line on the daemon's machine."""
        return subprocess.run(
            [str(BIN / "dagster"), *args, "-w", "workspace.yaml"],
            cwd=self.home.parent, env=self._environ(self.home), capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip

    def start_sensor(self) -> None:
        result = self.dagster("sensor", "start", "new_media_items_sensor")
        assert result.returncode == 0, result.stderr[-3000:]

    def launch_batch(self, key: str) -> None:
        """A rerun of one batch, queued as a user's launch from the UI is."""
        tags = json.dumps({"dagster/partition": key})
        result = self.dagster("job", "launch", "-j", "process_batch_job", "--tags", tags)
        assert result.returncode == 0, result.stderr[-3000:]

    def launch_clustering(self) -> None:
        result = self.dagster("job", "launch", "-j", "recluster_persons_job")
        assert result.returncode == 0, result.stderr[-3000:]

    def instance(self) -> dg.DagsterInstance:
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)  # the instance's config names these variables
        try:
            return dg.DagsterInstance.from_config(str(self.home))
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def kill(self, name: str) -> None:
        """SIGKILL to the process and its children, as a machine switched off."""
        process = self.processes.pop(name)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for name in list(self.processes):
            self.kill(name)


def wait_for(what: str, check: Callable[[], T | None], seconds: float, deployment: Deployment) -> T:
    """`check()` once it gives a value, polled; a failure names what was awaited and shows the
    daemon's and workers' last log lines."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        for name, process in deployment.processes.items():
            if process.poll() is not None:
                tail = deployment.log(name)[-3000:]
                raise AssertionError(f"{name} exited while waiting for {what}:\n{tail}")
        time.sleep(0.5)
    logs = "\n".join(f"--- {n}\n{deployment.log(n)[-2000:]}" for n in deployment.processes)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}\n{logs}")


# What a run of many batches must leave at zero, counted in the application database: media items
# still pending, items whose faces were written twice (or not all), a face row twice.
EXACTLY_ONCE_SQL = {
    "pending": 'SELECT COUNT(*) FROM "MediaItems" WHERE "IsFacesExtracted" = false',
    "items_with_faces_not_once": (
        'SELECT COUNT(*) FROM "MediaItems" i WHERE "FaceCount" <> '
        '(SELECT COUNT(*) FROM "Faces" f WHERE f."MediaItemId" = i."Id")'
    ),
    "faces_twice": (
        'SELECT COUNT(*) FROM (SELECT 1 FROM "Faces" GROUP BY "MediaItemId", "BoundingBox" '
        "HAVING COUNT(*) > 1) d"
    ),
}


def exactly_once(store: FaceStore, thumbnails: Path) -> dict[str, int]:
    """EXACTLY_ONCE_SQL's counts, and thumbnails missing or stray: all zero after many batches."""
    with store.engine.connect() as conn:
        counts = {name: int(conn.execute(text(sql)).scalar_one()) for name, sql in EXACTLY_ONCE_SQL.items()}
        paths = [r[0] for r in conn.execute(text('SELECT "ThumbnailPath" FROM "Faces"'))]
    files = {str(p.relative_to(thumbnails)) for p in thumbnails.rglob("*") if p.is_file()}
    return {
        **counts,
        "thumbnails_missing": sum(1 for p in paths if not p or p not in files),
        "thumbnails_stray": len(files - {p for p in paths if p}),
    }
