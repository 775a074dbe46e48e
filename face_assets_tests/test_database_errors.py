"""A database server that is not there: one clear line, no traceback, no password, no hang."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from face_assets.core.storage.connection import LOGIN_TIMEOUT_S, unreachable_reason
from face_assets.core.storage.engine import make_engine, odbc_to_url
from face_assets.core.storage.store import DatabaseUnavailable, FaceStore

PASSWORD = "S3cret"
# A refused connection fails at once; well below the login timeout proves nothing waited for it.
FAST_S = 12.0
assert FAST_S < LOGIN_TIMEOUT_S


def free_port() -> int:
    """A port nobody listens on (bound for a moment by this process, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def freetds(port: int, pwd: str = PASSWORD) -> str:
    return f"Driver={{FreeTDS}};Server=127.0.0.1;Port={port};Database=Media;UID=sa;PWD={pwd};TDS_Version=7.4"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A server that accepts TCP connections and never answers: a hung or firewalled database."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def run_cli(args: list[str], cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    environment = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "FACE_ASSETS_DATABASE_URL")
    }
    environment.pop("DAGSTER_HOME", None)
    environment.pop("SQL_CONNECTION_STRING", None)
    environment.update(env)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "face_assets.cli", *args],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return result, time.perf_counter() - started


@pytest.mark.parametrize("command", ["db init", "run"])
@pytest.mark.parametrize("database", ["sql-server-odbc-string", "postgresql-url"])
def test_an_unreachable_database_is_one_line_and_exit_code_2(
    tmp_path: Path, command: str, database: str
) -> None:
    port = free_port()
    if database == "sql-server-odbc-string":
        env = {"SQL_CONNECTION_STRING": freetds(port)}
    else:
        env = {"DATABASE_URL": f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:{port}/x"}
    photos = tmp_path / "photos"
    photos.mkdir()
    args = command.split() + ([str(photos)] if command == "run" else [])

    result, seconds = run_cli(args, tmp_path, **env)

    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), result.stderr
    assert lines[0].startswith("error: cannot connect to database ") and str(port) in lines[0]
    assert "Traceback" not in result.stderr and PASSWORD not in result.stderr + result.stdout
    assert seconds < FAST_S, seconds
    assert not (tmp_path / "data").exists()  # nothing fell back to the embedded database


def test_the_message_names_the_database_and_the_driver_reason_without_secrets() -> None:
    port = free_port()
    pwd = "{S3cret;+=x}}y}"  # braces, semicolon, plus, equals and an escaped brace
    url = odbc_to_url(freetds(port, pwd))
    started = time.perf_counter()
    with pytest.raises(DatabaseUnavailable) as failure:
        FaceStore.from_url(url)
    assert time.perf_counter() - started < FAST_S
    message = str(failure.value)
    assert "\n" not in message and "S3cret" not in message and "y}" not in message
    assert message.startswith("cannot connect to database mssql+pyodbc:///?odbc_connect=Driver={FreeTDS};")
    assert f"Port={port};" in message and "UID=sa;PWD=***;TDS_Version=7.4" in message
    # FreeTDS's own words, without the SQLSTATE, native code and ODBC function around them
    assert (
        ": [FreeTDS][SQL Server]Unable to connect: Adaptive Server is unavailable or does not exist — "
        in message
    )
    assert message.endswith("check the server, port, credentials and ODBC driver")


def test_a_url_password_is_hidden() -> None:
    url = f"postgresql+psycopg://face:{PASSWORD}@127.0.0.1:{free_port()}/media"
    with pytest.raises(DatabaseUnavailable) as failure:
        FaceStore.from_url(url)
    message = str(failure.value)
    assert "postgresql+psycopg://face:***@127.0.0.1:" in message and PASSWORD not in message
    assert "Connection refused" in message and "\n" not in message


@pytest.mark.parametrize("driver", ["pyodbc", "psycopg"])
def test_a_silent_server_is_given_up_after_the_login_timeout(silent_port: int, driver: str) -> None:
    url = (
        odbc_to_url(freetds(silent_port))
        if driver == "pyodbc"
        else f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:{silent_port}/x"
    )
    started = time.perf_counter()
    reason = unreachable_reason(make_engine(url), login_timeout_s=2)
    seconds = time.perf_counter() - started
    assert reason is not None and "timeout expired" in reason.lower(), reason
    assert 1.5 < seconds < 10, seconds


def test_every_new_sql_server_connection_gets_the_default_login_timeout() -> None:
    engine = make_engine(odbc_to_url(freetds(free_port())))
    seen: list[dict[str, Any]] = []
    assert unreachable_reason(engine) is not None
    # Listeners run in order: this one sees the arguments pyodbc.connect() receives.
    event.listen(engine, "do_connect", lambda dialect, record, cargs, cparams: seen.append(dict(cparams)))
    with pytest.raises(Exception, match="Unable to connect"):
        engine.connect()
    assert seen == [{"timeout": LOGIN_TIMEOUT_S}]
    engine.dispose()


def test_a_missing_odbc_driver_is_named() -> None:
    url = odbc_to_url(f"Driver={{No Such ODBC Driver}};Server=127.0.0.1;UID=sa;PWD={PASSWORD}")
    with pytest.raises(DatabaseUnavailable) as failure:
        FaceStore.from_url(url)
    message = str(failure.value)
    assert "[unixODBC][Driver Manager]Can't open lib 'No Such ODBC Driver'" in message
    assert PASSWORD not in message and "\n" not in message
