"""What goes wrong with the database, each as one line a user can act on."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from face_assets.core.storage.connection import driver_reason

logger = logging.getLogger(__name__)


class LockHeld(RuntimeError):
    """Another process holds a lock this one needs; the message says who and since when."""


class SchemaError(RuntimeError):
    """The application tables lack columns or tables this product needs."""


class DatabaseUnavailable(RuntimeError):
    """The database server cannot be reached or went away; the message is one line."""


def is_connection_error(error: DBAPIError) -> bool:
    """A lost or refused connection, as opposed to a fault in a statement."""
    return bool(error.connection_invalidated) or isinstance(error, OperationalError | InterfaceError)


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
        logger.error("%s", message)
        raise DatabaseUnavailable(message) from None


class CorrectionError(ValueError):
    """A correction that cannot apply (unknown id, name taken, ...); the message says why."""
