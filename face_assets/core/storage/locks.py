"""Named locks in the application database: two clusterings never write persons at once,
whichever scheduler, command or UI started them.

A lock whose holder is gone is taken over at once, not after hours: on the holder's own host
its process is looked up; from another host, its heartbeat (refreshed while the lock is held)
must have stopped for `stale_after_s`. `release_lock` frees one by hand.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from face_assets.core.storage.errors import LockHeld
from face_assets.core.storage.fencing import Fence, FencedWrites, fence_check
from face_assets.core.storage.schema import LocksTable, utcnow

logger = logging.getLogger(__name__)

# The holder refreshes its heartbeat this often; another host takes the lock over once the
# heartbeat is LOCK_STALE_S old (several missed beats, so a busy database is not mistaken).
HEARTBEAT_S = 30.0
LOCK_STALE_S = 300.0


@dataclass(frozen=True)
class LockHolder:
    name: str
    owner: str
    acquired_at: datetime
    host: str | None
    pid: int | None
    heartbeat_at: datetime | None

    def describe(self) -> str:
        where = f" (process {self.pid} on {self.host})" if self.host and self.pid else ""
        return f"held by {self.owner}{where} since {self.acquired_at:%Y-%m-%d %H:%M:%S} UTC"

    def gone(self, stale_after_s: float, now: datetime) -> str:
        """Why the holder is known to be gone, or "" while it may still be working."""
        if self.host == socket.gethostname() and self.pid is not None and not process_alive(self.pid):
            return f"its process {self.pid} on {self.host} is gone"
        last_sign = self.heartbeat_at or self.acquired_at
        if last_sign < now - timedelta(seconds=stale_after_s):
            return f"no heartbeat since {last_sign:%Y-%m-%d %H:%M:%S} UTC"
        return ""


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _holder(row: Any) -> LockHolder:
    return LockHolder(row.Name, row.Owner, row.AcquiredAt, row.Host, row.Pid, row.HeartbeatAt)


class LocksMixin(FencedWrites):
    engine: Engine
    _takeovers: list[tuple[LockHolder, str]]

    def taken_over_locks(self) -> list[tuple[LockHolder, str]]:
        """The holders this store's locks were taken from since the last call, with why."""
        taken, self._takeovers[:] = list(self._takeovers), []
        return taken

    @contextmanager
    def lock(
        self,
        name: str,
        owner: str,
        wait_seconds: float = 0.0,
        stale_after_s: float = LOCK_STALE_S,
    ) -> Iterator[None]:
        """Holds the named lock for the block; refuses (LockHeld) if another owner holds it
        for longer than `wait_seconds`. A holder that is gone is replaced at once, with a
        warning, and kept in `taken_over_locks()` (the Dagster layer marks its run failed).

        While held, the store's write transactions are fenced by it: once another process has
        taken it over, they raise LockLost and write nothing."""
        deadline = time.monotonic() + wait_seconds
        while True:
            taken = self._try_lock(name, owner, stale_after_s)
            if taken is not None:
                break
            holder = self.lock_holder(name)
            if time.monotonic() >= deadline:
                held = holder.describe() if holder else "just released"
                raise LockHeld(
                    f"{name} is running elsewhere ({held}); try again when it has finished, or "
                    f"`face-assets unlock {name}` if that process is gone"
                )
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
        previous, why = taken
        if previous is not None:
            self._takeovers.append((previous, why))
        fence = self._fence(name, owner[:255])
        stack = self._fences.setdefault(name, [])
        stack.append(fence)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(fence, stop), daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()
            stack.remove(fence)
            with self.engine.begin() as conn:
                conn.execute(
                    delete(LocksTable).where(
                        LocksTable.c.Name == name,
                        LocksTable.c.Owner == fence.owner,
                        LocksTable.c.AcquiredAt == fence.acquired_at,
                    )
                )

    def _fence(self, name: str, owner: str) -> Fence:
        """The lock as it was written (the database's own rounding of the time included)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(LocksTable).where(LocksTable.c.Name == name)).first()
        if row is None or row.Owner != owner:  # taken from us between the two statements
            fence = Fence(name, owner, utcnow())
            fence.lose(f"taken over by {row.Owner}" if row else "its row was deleted")
            return fence
        return Fence(name, owner, row.AcquiredAt)

    def _heartbeat(self, fence: Fence, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_S) and not fence.lost:
            try:
                with self.engine.begin() as conn:
                    beat = conn.execute(
                        update(LocksTable)
                        .where(
                            LocksTable.c.Name == fence.name,
                            LocksTable.c.Owner == fence.owner,
                            LocksTable.c.AcquiredAt == fence.acquired_at,
                        )
                        .values(HeartbeatAt=utcnow())
                    )
                    if beat.rowcount != 1:  # some drivers count only rows whose value changed
                        fence_check(conn, fence)
            except DBAPIError as error:  # a busy or lost database: the next beat tries again
                logger.info("heartbeat of lock %s not written: %s", fence.name, error.orig)
                continue
            if fence.lost:
                logger.warning("lost the lock %s: %s", fence.name, fence.lost_because)

    def _try_lock(self, name: str, owner: str, stale_after_s: float) -> tuple[LockHolder | None, str] | None:
        """None when held by a live holder; else (the holder taken over or None, why)."""
        now = utcnow()
        mine = {"Owner": owner[:255], "AcquiredAt": now, "Host": socket.gethostname()[:255],
                "Pid": os.getpid(), "HeartbeatAt": now}  # fmt: skip
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(LocksTable).values(Name=name, **mine))
            return None, ""
        except IntegrityError:
            pass
        with self.engine.begin() as conn:
            row = conn.execute(select(LocksTable).where(LocksTable.c.Name == name)).first()
            if row is None:
                return None  # released meanwhile: the next try inserts
            previous = _holder(row)
            why = previous.gone(stale_after_s, now)
            if not why:
                return None
            taken = conn.execute(
                update(LocksTable)
                .where(
                    LocksTable.c.Name == name,
                    LocksTable.c.Owner == row.Owner,
                    LocksTable.c.AcquiredAt == row.AcquiredAt,
                )  # fmt: skip
                .values(**mine)
            ).rowcount
        if taken != 1:
            return None  # another process took it over first
        logger.warning("took over the lock %s from %s: %s", name, previous.owner, why)
        return previous, why

    def lock_holder(self, name: str) -> LockHolder | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(LocksTable).where(LocksTable.c.Name == name)).first()
        return _holder(row) if row else None

    def release_lock(self, name: str) -> LockHolder | None:
        """Frees the named lock whoever holds it (`face-assets unlock`); the holder it had."""
        with self.engine.begin() as conn:
            row = conn.execute(select(LocksTable).where(LocksTable.c.Name == name)).first()
            if row is None:
                return None
            conn.execute(delete(LocksTable).where(LocksTable.c.Name == name, LocksTable.c.Owner == row.Owner))
        return _holder(row)
