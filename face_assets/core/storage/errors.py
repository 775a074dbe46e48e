"""What goes wrong with the database, each as one line a user can act on."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from face_assets.core.errors import UserError
from face_assets.core.storage.connection import driver_reason

logger = logging.getLogger(__name__)


class LockHeld(UserError, RuntimeError):
    """Another process holds a lock this one needs; the message says who and since when."""


class LockLost(UserError, RuntimeError):
    """A lock this process held was taken over; its writes since are refused."""


class SchemaError(UserError, RuntimeError):
    """The application tables lack columns or tables this product needs."""


class DatabaseUrlError(UserError, ValueError):
    """DATABASE_URL (or the ODBC string) names no database this product can open."""


class DatabaseUnavailable(UserError, RuntimeError):
    """The database server cannot be reached or went away; the message is one line."""


def is_connection_error(error: DBAPIError) -> bool:
    """A lost or refused connection, as opposed to a fault in a statement."""
    return bool(error.connection_invalidated) or isinstance(error, OperationalError | InterfaceError)


# SQLSTATE 40001 (serialization failure: MariaDB's 1213 deadlock, SQL Server's 1205) and
# PostgreSQL's 40P01: the server rolled the transaction back and asks for it to be retried.
_RETRY_STATES = ("40001", "40P01", "(1213)", "(1205)")


def is_deadlock(error: BaseException) -> bool:
    """The server chose this transaction as a deadlock victim: retrying it is the cure. Also
    when that happened inside a savepoint: MariaDB rolls the whole transaction back, and the
    error raised is then the savepoint's rollback failing ("SAVEPOINT ... does not exist"),
    with the deadlock as its context."""
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, DBAPIError) and any(state in str(seen.orig) for state in _RETRY_STATES):
            return True
        seen = seen.__context__
    return False


def unavailable(error: BaseException) -> DatabaseUnavailable | None:
    """`error` as DatabaseUnavailable when it says the database cannot be reached or went away
    (its one line, not SQLAlchemy's statement dump); None for any other error."""
    if isinstance(error, DatabaseUnavailable):
        return error
    if isinstance(error, DBAPIError) and is_connection_error(error):
        return DatabaseUnavailable(f"the database went away ({driver_reason(error)}); rerun when it is back")
    return None


@contextmanager
def saving(what: str) -> Iterator[None]:
    """Turns a connection lost while saving `what` into one logged line and DatabaseUnavailable.
    The transaction was rolled back (or died with the server): nothing of `what` is written."""
    try:
        yield
    except DBAPIError as error:
        if not is_connection_error(error):
            raise
        message = (
            f"{what} was not saved: the database is unavailable ({driver_reason(error)}); "
            "rerun when it is back"
        )
        logger.info("%s", message)  # the error carries it to the user once
        raise DatabaseUnavailable(message) from None


class CorrectionError(UserError, ValueError):
    """A correction that cannot apply (unknown id, name taken, ...); the message says why."""
