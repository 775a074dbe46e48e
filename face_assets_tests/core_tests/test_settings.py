"""Settings: every variable is documented, legacy names still work, `.env` is read."""

from pathlib import Path

import pytest
from pydantic import AliasChoices

from face_assets.core.settings import Settings, get_settings

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def env_names(name: str) -> list[str]:
    field = Settings.model_fields[name]
    if isinstance(field.validation_alias, AliasChoices):
        return [str(choice) for choice in field.validation_alias.choices]
    return [f"FACE_ASSETS_{name.upper()}"]


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented_in_env_example(name: str) -> None:
    documented = EXAMPLE.read_text()
    assert any(f"{env}=" in documented for env in env_names(name)), name


def test_legacy_variable_names_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("THUMBNAIL_SAVE_PATH", str(tmp_path / "thumbs"))
    monkeypatch.setenv(
        "SQL_CONNECTION_STRING", "Driver={ODBC Driver 18 for SQL Server};Server=db;Database=Media"
    )
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = get_settings()
    assert settings.resolved_thumbnail_dir() == tmp_path / "thumbs"
    url = settings.resolved_database_url()
    assert url.startswith("mssql+pyodbc:///?odbc_connect=") and "Server%3Ddb" in url


def test_dotenv_file_in_the_working_folder_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FACE_ASSETS_BATCH_SIZE", raising=False)
    (tmp_path / ".env").write_text("FACE_ASSETS_BATCH_SIZE=7\nDATABASE_URL=sqlite:///elsewhere.db\n")
    settings = get_settings()
    assert settings.batch_size == 7 and settings.resolved_database_url() == "sqlite:///elsewhere.db"


def test_default_database_is_a_sqlite_file_in_the_data_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "SQL_CONNECTION_STRING", "FACE_ASSETS_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert Settings(_env_file=None).resolved_database_url() == "sqlite:///data/face_assets.db"


CLUSTER_ENV = {
    "FACE_ASSETS_CLUSTER_ALGORITHM": "hdbscan",
    "FACE_ASSETS_CLUSTER_LINK_THRESHOLD": "0.4",
    "FACE_ASSETS_CLUSTER_MIN_SIZE": "5",
    "FACE_ASSETS_CLUSTER_MIN_SAMPLES": "3",
    "FACE_ASSETS_CLUSTER_EPS": "0.3",
    "FACE_ASSETS_MATCH_THRESHOLD": "0.6",
    "FACE_ASSETS_CLUSTER_NEIGHBOURS": "12",
    "FACE_ASSETS_CLUSTER_USE_UMAP": "true",
}


def test_cluster_params_follow_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from face_assets.core.clustering.cluster import ClusterParams

    monkeypatch.chdir(tmp_path)
    for name, value in CLUSTER_ENV.items():
        monkeypatch.setenv(name, value)
    assert get_settings().cluster_params() == ClusterParams(
        algorithm="hdbscan", link_threshold=0.4, min_cluster_size=5, min_samples=3, eps=0.3,
        match_threshold=0.6, neighbours=12, use_umap=True,
    )  # fmt: skip


def test_default_settings_are_the_default_cluster_params(monkeypatch: pytest.MonkeyPatch) -> None:
    from face_assets.core.clustering.cluster import ClusterParams

    for name in CLUSTER_ENV:
        monkeypatch.delenv(name, raising=False)
    assert Settings(_env_file=None).cluster_params() == ClusterParams()


@pytest.mark.parametrize("neighbours", ["1", "201"])
def test_cluster_neighbours_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch, neighbours: str) -> None:
    monkeypatch.setenv("FACE_ASSETS_CLUSTER_NEIGHBOURS", neighbours)
    with pytest.raises(ValueError, match="cluster_neighbours"):
        Settings(_env_file=None)


def test_overrides_that_are_none_or_empty_take_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACE_ASSETS_THUMBNAIL_PX", "64")
    monkeypatch.setenv("FACE_ASSETS_GALLERY_DIR", str(tmp_path / "gallery"))
    settings = get_settings(thumbnail_px=None, gallery_dir="")
    assert settings.thumbnail_px == 64 and settings.resolved_gallery_dir() == tmp_path / "gallery"
    assert get_settings(thumbnail_px=32).thumbnail_px == 32


def test_an_empty_variable_is_no_value(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`DATABASE_URL=` left empty in a .env means the default database, not a URL of ""."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DATABASE_URL=\nFACE_ASSETS_CELERY_BROKER_URL=\n")
    settings = get_settings()
    assert settings.database_url is None and settings.celery_broker_url is None
    assert settings.resolved_database_url() == "sqlite:///data/face_assets.db"
