"""Build the image and run deploy/compose.yaml end to end on this machine, from Debian's packages.

Where no image registry is reachable (this machine, an air-gapped site), every image is built
locally: a Debian bookworm base made with debootstrap, the face_assets image from the
Dockerfile on it, and PostgreSQL and Redis from Debian's packages (deploy/offline/). Then the
Compose file starts the whole deployment with two workers, the sensors are turned on as a user
would in the UI, and the script waits until the sample photos are processed, checks that each
item was processed exactly once, that the webserver's container sees every thumbnail the workers
wrote, that both workers ran batches, and that a clustering run makes persons.

    python scripts/verify_compose.py            # as root: installs docker.io if missing

Prints what it did and how long each part took; exit 2 with one line naming the failing part.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from face_assets_devtools.deployment import EXACTLY_ONCE_SQL
from face_assets_devtools.harness import print_report, sample_folder

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "face-assets-verify"
BASE_IMAGE = "face-assets-offline/debian-python:3.11-bookworm"
DEBIAN_PACKAGES = ["docker.io", "docker-compose", "debootstrap"]
COMPOSE_FILES = [ROOT / "deploy" / "compose.yaml", ROOT / "deploy" / "offline" / "compose.offline.yaml"]


class Failure(Exception):
    pass


def run(command: list[str], *, check: bool = True, capture: bool = False, **kwargs) -> str:
    result = subprocess.run(command, text=True, capture_output=capture, **kwargs)
    if check and result.returncode != 0:
        shown = " ".join(c for c in command if not c.endswith(".yaml") and c != "-f")
        last = (result.stderr or result.stdout or "").strip().splitlines()[-1:] if capture else []
        raise Failure(f"{shown} exited {result.returncode}" + (f": {last[0]}" if last else ""))
    return result.stdout if capture else ""


def engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def ensure_engine(log_dir: Path) -> None:
    """Debian's Docker engine, started here if none answers."""
    missing = [
        p for p in DEBIAN_PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode
    ]
    if missing:
        print("installing Debian packages:", " ".join(missing))
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", *missing], env=env, capture=True)
    if engine_answers():
        return
    print("starting dockerd")
    log = open(log_dir / "dockerd.log", "ab")  # noqa: SIM115 - dockerd keeps it open
    subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    wait_for("the Docker engine", engine_answers, 60)


def ensure_base_image(work: Path) -> None:
    """A Debian bookworm image with Python 3.11 and venv, made by debootstrap from Debian's mirror."""
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode == 0:
        return
    rootfs = work / "rootfs"
    print("debootstrap: Debian bookworm with python3 and python3-venv")
    run(
        ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
         "bookworm", str(rootfs), "http://deb.debian.org/debian"],
        capture=True,
    )  # fmt: skip
    # The host's trust store and package sources: pip and apt inside the builds reach the same
    # registries through the same certificates as this machine.
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        shutil.copy(sources, rootfs / "etc/apt/sources.list.d/debian.sources")
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    run(["docker", "import", "-c", "ENV LANG=C.UTF-8", "-", BASE_IMAGE], stdin=tar.stdout, capture=True)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)


def compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def wait_for(what: str, check: Callable[[], object], seconds: float) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(2)
    raise Failure(f"timed out after {seconds:.0f} s waiting for {what}")


def sample_photos(media: Path) -> int:
    """The PyPI sample (118 photos of 5 people) copied into the media folder."""
    source = sample_folder()
    count = 0
    for photo in sorted(source.rglob("*.jpg")):
        target = media / photo.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, target)
        count += 1
    return count


class Stack:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.base = [*compose_command(), "-p", PROJECT]
        for path in COMPOSE_FILES:
            self.base += ["-f", str(path)]

    def __call__(self, *args: str, capture: bool = False, check: bool = True) -> str:
        return run([*self.base, *args], env=self.env, capture=capture, check=check)

    def sql(self, query: str) -> list[str]:
        out = self("exec", "-T", "postgres", "psql", "-U", "dagster", "-d", "face_assets", "-At", "-c", query,
                   capture=True)  # fmt: skip
        return out.strip().splitlines()

    def number(self, query: str) -> int:
        return int(self.sql(query)[0] or 0)

    def dagster(self, *args: str) -> None:
        self("exec", "-T", "daemon", "dagster", *args, "-w", "/opt/dagster/workspace.yaml", capture=True)


def webserver_up() -> bool:
    try:
        with urllib.request.urlopen("http://127.0.0.1:3000/server_info", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def verify(keep: bool) -> dict[str, object]:
    timings: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="face-assets-compose-"))
    ensure_engine(work)
    started = time.monotonic()
    ensure_base_image(work)
    timings["base image"] = time.monotonic() - started
    media = work / "media"
    photos = sample_photos(media)
    env = {
        **os.environ,
        "POSTGRES_PASSWORD": secrets.token_hex(12),
        "MEDIA_DIR": str(media),
        "BASE_IMAGE": BASE_IMAGE,
        "FACE_ASSETS_BATCH_SIZE": "20",
        "FACE_ASSETS_MAX_RUNS": "2",
        "FACE_ASSETS_SENSOR_INTERVAL_S": "10",
    }
    stack = Stack(env)
    try:
        started = time.monotonic()
        print("building the images (face_assets, PostgreSQL, Redis)")
        stack("build", capture=True)
        timings["build"] = time.monotonic() - started

        started = time.monotonic()
        stack("up", "-d", "--scale", "worker=2", capture=True)
        wait_for("the webserver on http://127.0.0.1:3000", webserver_up, 300)
        timings["up"] = time.monotonic() - started

        # As a user turns them on under Automation.
        started = time.monotonic()
        stack.dagster("sensor", "start", "media_folder_sensor")
        stack.dagster("sensor", "start", "new_media_items_sensor")
        wait_for(f"{photos} media items registered", lambda: stack.number('SELECT COUNT(*) FROM "MediaItems"')
                 >= photos, 300)  # fmt: skip
        pending = EXACTLY_ONCE_SQL["pending"]
        wait_for("every media item processed", lambda: stack.number(pending) == 0, 900)
        timings["photos processed"] = time.monotonic() - started

        faces = stack.number('SELECT COUNT(*) FROM "Faces"')
        checks = {name: stack.number(sql) for name, sql in EXACTLY_ONCE_SQL.items() if name != "pending"}
        # The webserver's container sees what the workers wrote on the shared volume.
        listed = stack("exec", "-T", "webserver", "find", "/srv/thumbnails", "-type", "f", "-name", "*.jpg",
                       capture=True)  # fmt: skip
        checks["thumbnails_not_seen_by_webserver"] = abs(faces - len(listed.split()))
        if any(checks.values()) or faces == 0:
            raise Failure(f"not exactly once: {faces} faces, {checks}")

        logs = stack("logs", "--no-color", "worker", capture=True)
        per_worker: dict[str, int] = {}
        for line in logs.splitlines():
            match = re.match(r"^(\S+)\s*\|.*Task \S*execute_job\S* succeeded", line)
            if match:
                per_worker[match.group(1)] = per_worker.get(match.group(1), 0) + 1
        if len(per_worker) < 2:
            raise Failure(f"batch runs did not go to both workers: {per_worker or 'none succeeded'}")

        started = time.monotonic()
        stack.dagster("job", "launch", "-j", "recluster_persons_job")
        persons_sql = 'SELECT COUNT(*) FROM "Persons"'
        wait_for("persons from the clustering run", lambda: stack.number(persons_sql) > 0, 600)
        timings["clustering"] = time.monotonic() - started
        return {
            "photos": photos,
            "faces": faces,
            "persons": stack.number(persons_sql),
            "runs per worker": per_worker,
            **checks,
            "seconds": {k: round(v, 1) for k, v in timings.items()},
        }
    except Failure:
        tail = stack("logs", "--no-color", "--tail", "30", capture=True, check=False)
        print(tail[-6000:], file=sys.stderr)
        raise
    finally:
        if not keep:
            stack("down", "-v", "--remove-orphans", capture=True, check=False)
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the deployment running afterwards")
    args = parser.parse_args()
    try:
        report = verify(args.keep)
    except Failure as error:
        print(f"compose verification failed: {error}", file=sys.stderr)
        return 2
    print_report(report)
    print("compose verification passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
