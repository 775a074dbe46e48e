"""The first connection to a database: a bounded login wait, and one line saying why it failed."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

# Seconds a login may take. Microsoft's ODBC driver waits 15 s by default; FreeTDS and libpq wait
# forever for a server that accepts the connection and never answers.
LOGIN_TIMEOUT_S = 15

# The connect() keyword each driver reads its login timeout from.
_TIMEOUT_ARGUMENT = {"pyodbc": "timeout", "psycopg": "connect_timeout", "psycopg2": "connect_timeout"}

# PWD=... or Password=... in an ODBC string; a value in braces may hold ";" and "}}".
_ODBC_SECRET = re.compile(r"(?i)((?:^|;)\s*(?:PWD|Password)\s*=\s*)(\{(?:[^}]|\}\})*\}|[^;]*)")
_SQLSTATE = re.compile(r"[0-9A-Z]{5}")
HIDDEN = "***"


def mask_odbc(connection_string: str) -> str:
    return _ODBC_SECRET.sub(lambda m: m.group(1) + HIDDEN, connection_string)


def _secrets(url: URL) -> list[str]:
    """Passwords the URL carries, in the URL itself or inside an ODBC string."""
    found = [url.password] if url.password else []
    odbc = url.query.get("odbc_connect")
    if isinstance(odbc, str):
        for match in _ODBC_SECRET.finditer(odbc):
            value = match.group(2)
            found += [value, value[1:-1].replace("}}", "}")] if value.startswith("{") else [value]
    return [str(s) for s in found if len(str(s)) >= 3]  # shorter ones would mask ordinary words


def safe_url(url: str | URL) -> str:
    """The URL as a user wrote it, with every password replaced by ***; an ODBC string readable."""
    parsed = make_url(url)
    query = {k: v for k, v in parsed.query.items() if k != "odbc_connect"}
    query.update({k: HIDDEN for k in query if k.lower() in ("password", "pwd")})
    shown = parsed.set(query=query).render_as_string(hide_password=True)
    odbc = parsed.query.get("odbc_connect")
    if isinstance(odbc, str):
        shown += f"{'&' if query else '?'}odbc_connect={mask_odbc(odbc)}"
    return shown


def driver_reason(error: BaseException) -> str:
    """The first meaningful line the driver gave, without SQLAlchemy's wrapping."""
    original = getattr(error, "orig", None) or error
    args: tuple[Any, ...] = tuple(getattr(original, "args", ()))
    text = str(original)
    if len(args) == 2 and isinstance(args[1], str) and _SQLSTATE.fullmatch(str(args[0])):
        # pyodbc: (SQLSTATE, "[SQLSTATE] [driver]message (native code) (SQLDriverConnect); [...] ...")
        text = re.split(r";\s*(?=\[[0-9A-Z]{5}\])", args[1])[0]
        text = re.sub(r"^\[[0-9A-Z]{5}\]\s*", "", text)
        text = re.sub(r"(\s*\(-?\d+\))?\s*\(SQL\w+\)\s*$", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


def bound_login_wait(engine: Engine, seconds: int = LOGIN_TIMEOUT_S) -> None:
    """Every new connection of `engine` gives up its login after `seconds`, unless the URL or the
    caller set a timeout of its own. Only the login: queries keep no time limit."""
    argument = _TIMEOUT_ARGUMENT.get(str(engine.dialect.driver))
    if argument is None:
        return

    def login_timeout(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        cparams.setdefault(argument, seconds)

    event.listen(engine, "do_connect", login_timeout)


def unreachable_reason(engine: Engine, login_timeout_s: int = LOGIN_TIMEOUT_S) -> str | None:
    """Opens a first connection, with a bounded login wait for this and every later one.

    None when the database answers; otherwise one line naming the database (no password), the
    driver's reason and what to check, for DatabaseUnavailable.
    """
    bound_login_wait(engine, login_timeout_s)
    try:
        with engine.connect():
            return None
    except DBAPIError as error:
        reason = driver_reason(error)
        for secret in _secrets(engine.url):
            reason = reason.replace(secret, HIDDEN)
        if engine.dialect.name == "sqlite":
            hint = "check the path and its folder's permissions"
        elif engine.dialect.driver == "pyodbc":
            hint = "check the server, port, credentials and ODBC driver"
        else:
            hint = "check the server, port and credentials"
        return f"cannot connect to database {safe_url(engine.url)}: {reason} — {hint}"
