"""Throwaway servers for the tests and the benchmarks: PostgreSQL, MariaDB, and Redis as broker.

Each server lives in its own temporary folder, listens on 127.0.0.1 on a free port, and is
started and stopped here, so a test can also stop it in the middle of a run. The binaries come
from Debian (`make test` installs what is missing).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote_plus

from sqlalchemy import create_engine, text

PASSWORD = "face-assets-test"
MARIADB_ODBC_DRIVER = "MariaDB Unicode"  # registered in odbcinst.ini by Debian's odbc-mariadb


class ServerUnavailable(RuntimeError):
    """The server's binaries are missing or it did not start; the message says which."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _find(binary: str, *folders: str) -> str:
    found = shutil.which(binary)
    for folder in folders:
        candidates = sorted(Path("/").glob(folder.lstrip("/") + "/" + binary))
        if not found and candidates:
            found = str(candidates[-1])
    if not found:
        raise ServerUnavailable(f"{binary} not found: `make test` installs it (Debian package)")
    return found


def _wait_for_port(
    port: int, process: subprocess.Popen[bytes] | None, log: Path, seconds: float = 60
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerUnavailable(f"server exited at start: {log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise ServerUnavailable(f"server did not listen on port {port} within {seconds} s")


class ThrowawayServer:
    """A database server of one kind; `new_database()` gives each test its own database."""

    kind: str

    def __init__(self) -> None:
        # Not under pytest's 0700 temporary folders: PostgreSQL runs as its own user when the
        # tests run as root and must reach its data folder.
        self.root = Path(tempfile.mkdtemp(prefix=f"face-assets-{self.kind}-"))
        self.root.chmod(0o755)
        self.port = _free_port()
        self._names = itertools.count(1)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stops at once, as a crash or a power cut would: nothing is flushed politely."""
        raise NotImplementedError

    def admin_url(self) -> str:
        raise NotImplementedError

    def url(self, database: str) -> str:
        raise NotImplementedError

    def new_database(self) -> str:
        name = f"t{os.getpid()}_{next(self._names)}"
        engine = create_engine(self.admin_url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        engine.dispose()
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class PostgresServer(ThrowawayServer):
    kind = "postgresql"

    def __init__(self) -> None:
        super().__init__()
        self.data = self.root / "data"
        self._pg_ctl = _find("pg_ctl", "/usr/lib/postgresql/*/bin")
        initdb = _find("initdb", "/usr/lib/postgresql/*/bin")
        password_file = self.root / "password"
        password_file.write_text(PASSWORD)
        self._chown()
        self._run(
            [initdb, "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
             f"--pwfile={password_file}", "-E", "UTF8", "--no-sync"]
        )  # fmt: skip
        self.start()

    def _chown(self) -> None:
        # PostgreSQL refuses to run as root: as root, its files belong to the postgres user.
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            for path in self.root.rglob("*"):
                shutil.chown(path, "postgres", "postgres")

    def _run(self, command: list[str]) -> None:
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServerUnavailable(f"{' '.join(command)} failed: {result.stderr.strip()[-2000:]}")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        log = self.root / "server.log"
        self._run([self._pg_ctl, "-D", str(self.data), "-l", str(log), "-o", options, "-w", "start"])
        _wait_for_port(self.port, None, log)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run([self._pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"])

    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{self.port}/{database}"


class MariaDBServer(ThrowawayServer):
    """MariaDB reached through pyodbc and Debian's MariaDB ODBC driver: the connector code path
    SQL Server deployments use."""

    kind = "mariadb"

    def __init__(self) -> None:
        super().__init__()
        self.data = self.root / "data"
        self.socket = self.root / "mariadb.sock"
        self._mariadbd = _find("mariadbd", "/usr/sbin")
        install = _find("mariadb-install-db", "/usr/bin")
        result = subprocess.run(
            [install, "--no-defaults", f"--datadir={self.data}", "--user=" + _user(),
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServerUnavailable(f"mariadb-install-db failed: {result.stderr.strip()[-2000:]}")
        self._process: subprocess.Popen[bytes] | None = None
        self.start()
        engine = create_engine(
            f"mysql+pyodbc:///?odbc_connect={quote_plus(self._odbc('mysql', user='root', password=''))}"
        )
        with engine.begin() as conn:
            conn.execute(text(f"CREATE USER 'face_assets'@'%' IDENTIFIED BY '{PASSWORD}'"))
            conn.execute(text("GRANT ALL PRIVILEGES ON *.* TO 'face_assets'@'%'"))
        engine.dispose()

    def start(self) -> None:
        log = self.root / "server.log"
        self._process = subprocess.Popen(
            [self._mariadbd, "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.socket}", "--user=" + _user(),
             "--skip-name-resolve", "--innodb-flush-log-at-trx-commit=2",
             "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
             f"--log-error={log}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for_port(self.port, self._process, log)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def _odbc(self, database: str, user: str = "face_assets", password: str = PASSWORD) -> str:
        return (
            f"DRIVER={{{MARIADB_ODBC_DRIVER}}};SERVER=127.0.0.1;PORT={self.port};DATABASE={database};"
            f"UID={user};PWD={password};CHARSET=utf8mb4"
        )

    def admin_url(self) -> str:
        return self.url("mysql")

    def url(self, database: str) -> str:
        return f"mysql+pyodbc:///?odbc_connect={quote_plus(self._odbc(database))}"


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


SERVERS: dict[str, type[ThrowawayServer]] = {"postgresql": PostgresServer, "mariadb": MariaDBServer}


class RedisServer:
    """A throwaway Redis (Debian's redis-server): the Celery broker and task states of the
    worker tests, on 127.0.0.1 on a free port, nothing written to disk."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="face-assets-redis-"))
        self.port = _free_port()
        binary = _find("redis-server", "/usr/bin")
        log = self.root / "server.log"
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
             "--save", "", "--appendonly", "no", "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for_port(self.port, self._process, log)

    def url(self, database: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
