"""The Dagster UI, for real: `dagster dev` on 127.0.0.1, its GraphQL API, and headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Screenshots are kept for a human to look at after the run (CI keeps the folder).
ARTIFACTS = Path(os.environ.get("FACE_ASSETS_TEST_ARTIFACTS", REPO / "test-artifacts"))

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`dagster dev` with a fresh DAGSTER_HOME (telemetry and pop-ups off), stopped cleanly."""
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    log = (home / "dagster-dev.log").open("w")
    dagster = str(Path(sys.executable).with_name("dagster"))
    process = subprocess.Popen(
        [dagster, "dev", "-m", "face_assets.definitions", "-h", "127.0.0.1", "-p", str(port)],
        cwd=home, env={**os.environ, "DAGSTER_HOME": str(home)},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((home / "dagster-dev.log").read_text()[-3000:]) from None
                time.sleep(1)
        yield url
    finally:
        # SIGINT is dagster dev's Ctrl-C: it stops the webserver, daemon and code server.
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


def test_graphql_lists_the_assets_sensors_and_schedule(dagster_ui: str) -> None:
    data = graphql(
        dagster_ui,
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { "
        "sensors { name } schedules { name cronSchedule } assetNodes { assetKey { path } } } } } }",
    )
    (repository,) = data["repositoriesOrError"]["nodes"]
    assets = {node["assetKey"]["path"][0] for node in repository["assetNodes"]}
    assert assets == {
        "media_items", "detected_faces", "face_thumbnails", "face_embeddings", "face_persons",
        "person_clusters", "person_gallery", "tuned_embedder",
    }  # fmt: skip
    assert {s["name"] for s in repository["sensors"]} == {"new_media_items_sensor", "media_folder_sensor"}
    assert repository["schedules"] == [{"name": "recluster_schedule", "cronSchedule": "0 3 * * *"}]


@pytest.mark.parametrize(
    ("page", "name"),
    [
        ("asset-groups", "ui-lineage.png"),
        ("locations/face_assets.definitions/asset-groups/faces", "ui-faces.png"),
    ],
)
def test_asset_graph_renders_in_headless_chromium(
    dagster_ui: str, tmp_path: Path, page: str, name: str
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is installed by .ci/run (Debian package chromium)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / name
    screenshot.unlink(missing_ok=True)
    args = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-quic", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1600,1000",
        "--virtual-time-budget=20000", f"--screenshot={screenshot}", f"{dagster_ui}/{page}",
    ]  # fmt: skip
    subprocess.run(args, capture_output=True, timeout=120, check=True)
    html = subprocess.run(
        [*args[:-2], "--dump-dom", f"{dagster_ui}/{page}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one
    assert "dagster" in html.lower()


def test_gallery_opens_from_disk_with_one_section_per_person(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, photo_folder: Path, models_dir: Path
) -> None:
    import dagster as dg

    from face_assets.core.storage.store import FaceStore
    from face_assets.runs import materialize_pipeline

    monkeypatch.setenv("FACE_ASSETS_GALLERY_DIR", str(tmp_path / "gallery"))
    db_url = f"sqlite:///{tmp_path / 'faces.db'}"
    run = materialize_pipeline(
        photo_folder, database_url=db_url, thumbnail_dir=tmp_path / "thumbnails",
        instance=dg.DagsterInstance.ephemeral(),
    )  # fmt: skip
    assert run.success
    page = tmp_path / "gallery" / "index.html"
    persons = FaceStore.from_url(db_url).counts()["persons"]
    assert run.metadata()["person_gallery"]["persons"] == persons > 0

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is installed by `make test` (Debian package chromium)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "gallery.png"
    args = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600",
        "--allow-file-access-from-files", "--virtual-time-budget=5000",
    ]  # fmt: skip
    subprocess.run(
        [*args, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=120, check=True
    )
    html = subprocess.run(
        [*args, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert html.count('<section class="person"') == persons
    assert html.count('<section class="unassigned"') == 1
    assert screenshot.stat().st_size > 20_000
    images = [tmp_path / "gallery" / src for src in __import__("re").findall(r'src="([^"]+)"', html)]
    assert images and all(image.resolve().is_file() for image in images)  # every thumbnail resolves
