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
