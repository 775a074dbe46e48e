"""Dagster's own storage on PostgreSQL (deploy/dagster-postgres.yaml), the application data on
a second PostgreSQL database: a user's `face-assets run` leaves its runs and materialisations
in PostgreSQL, and nothing in SQLite files under DAGSTER_HOME."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import create_engine, make_url, text

from face_assets.core.storage.store import FaceStore
from face_assets_devtools.servers import ThrowawayServer
from face_assets_tests.conftest import IDENTITIES
from face_assets_tests.test_cli import face_assets, run

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "dagster-postgres.yaml"


def test_runs_and_materialisations_are_stored_in_postgresql(
    postgresql_server: ThrowawayServer,
    tmp_path: Path,
    photo_folder: Path,
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(EXAMPLE, home / "dagster.yaml")
    dagster_db = make_url(postgresql_server.new_database())
    settings = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": str(dagster_db.host),
        "DAGSTER_PG_PORT": str(dagster_db.port),
        "DAGSTER_PG_DB": str(dagster_db.database),
        "DAGSTER_PG_USERNAME": str(dagster_db.username),
        "DAGSTER_PG_PASSWORD": str(dagster_db.password),
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    app_url = postgresql_server.new_database()
    folder = tmp_path / "photos"
    shutil.copytree(photo_folder / IDENTITIES[0], folder / IDENTITIES[0])

    env = {**settings, "DATABASE_URL": app_url}
    assert run(face_assets("db", "init"), tmp_path, **env).returncode == 0
    result = run(face_assets("run", str(folder)), tmp_path, **env)
    assert result.returncode == 0, result.stderr[-3000:]

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = instance.get_runs()
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        for asset in ("media_items", "detected_faces", "face_embeddings", "person_clusters"):
            assert instance.get_latest_materialization_event(dg.AssetKey(asset)) is not None, asset
    finally:
        instance.dispose()
    engine = create_engine(dagster_db)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar_one() == len(runs)
        assert conn.execute(text("SELECT count(*) FROM event_logs")).scalar_one() > 0
    engine.dispose()
    assert not list(home.rglob("*.db"))  # no SQLite run or event storage beside it
    store = FaceStore.from_url(app_url)
    counts = store.counts()
    store.dispose()
    assert counts["media_items"] == len(list(folder.rglob("*.jpg"))) and counts["media_items_pending"] == 0
