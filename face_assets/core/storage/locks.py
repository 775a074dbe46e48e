"""Named locks in the application database: two clusterings never write persons at once,
whichever scheduler, command or UI started them."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from face_assets.core.storage.errors import LockHeld
from face_assets.core.storage.schema import LocksTable, utcnow

logger = logging.getLogger(__name__)


class LocksMixin:
    engine: Engine

    @contextmanager
    def lock(
        self, name: str, owner: str, wait_seconds: float = 0.0, stale_after_s: float = 6 * 3600
    ) -> Iterator[None]:
        """Holds the named lock for the block; refuses (LockHeld) if another owner holds it
        for longer than `wait_seconds`. A lock older than `stale_after_s` (its holder died)
        is taken over."""
        deadline = time.monotonic() + wait_seconds
        while not self._try_lock(name, owner, stale_after_s):
            holder = self._lock_holder(name)
            if time.monotonic() >= deadline:
                raise LockHeld(f"{name} is running elsewhere ({holder}); try again when it has finished")
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
        try:
            yield
        finally:
            with self.engine.begin() as conn:
                conn.execute(delete(LocksTable).where(LocksTable.c.Name == name, LocksTable.c.Owner == owner))

    def _try_lock(self, name: str, owner: str, stale_after_s: float) -> bool:
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(LocksTable).values(Name=name, Owner=owner[:255], AcquiredAt=now))
            return True
        except IntegrityError:
            pass
        with self.engine.begin() as conn:
            row = conn.execute(select(LocksTable).where(LocksTable.c.Name == name)).first()
            if row is None or row.AcquiredAt > now - timedelta(seconds=stale_after_s):
                return False
            taken = conn.execute(
                update(LocksTable)
                .where(LocksTable.c.Name == name, LocksTable.c.AcquiredAt == row.AcquiredAt)
                .values(Owner=owner[:255], AcquiredAt=now)
            ).rowcount
        if taken == 1:
            logger.warning("took over the stale lock %s of %s (since %s)", name, row.Owner, row.AcquiredAt)
        return taken == 1

    def _lock_holder(self, name: str) -> str:
        with self.engine.connect() as conn:
            row = conn.execute(select(LocksTable).where(LocksTable.c.Name == name)).first()
        return f"held by {row.Owner} since {row.AcquiredAt:%Y-%m-%d %H:%M:%S} UTC" if row else "just released"
