"""Writes fenced by the locks a store holds: once a lock was taken over (its holder looked gone
to another process: a paused VM, a heartbeat that could not reach the database), every later
write transaction of the old holder is refused inside that transaction, so nothing it does
after the loss is kept. The heartbeat finds the loss too and says so at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, select

from face_assets.core.storage.errors import LockLost
from face_assets.core.storage.schema import LocksTable


@dataclass
class Fence:
    """One lock as this store acquired it: the row's owner and acquisition time identify it."""

    name: str
    owner: str
    acquired_at: datetime
    lost_because: str = ""
    _lost: threading.Event = field(default_factory=threading.Event, repr=False)

    def lose(self, why: str) -> None:
        if not self._lost.is_set():
            self.lost_because = why
            self._lost.set()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def refusal(self) -> LockLost:
        return LockLost(
            f"lost the lock {self.name} ({self.lost_because}); stopped before writing, and "
            "the process that took it over carries on"
        )


class FencedWrites:
    engine: Engine
    # name -> the fences of that name this store holds, the newest last (a lock taken over by
    # the same store in a nested block supersedes the outer one's).
    _fences: dict[str, list[Fence]]

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction, refused (LockLost, nothing written) when a lock this store holds
        is no longer its own."""
        with self.engine.begin() as conn:
            self._check_fences(conn)
            yield conn

    def _check_fences(self, conn: Connection) -> None:
        for fences in list(self._fences.values()):
            if not fences:
                continue
            fence = fences[-1]
            if not fence.lost:
                fence_check(conn, fence)
            if fence.lost:
                raise fence.refusal()


def fence_check(conn: Connection, fence: Fence) -> None:
    """Marks `fence` lost when its lock row is gone or belongs to another acquisition."""
    row = conn.execute(
        select(LocksTable.c.Owner, LocksTable.c.AcquiredAt).where(LocksTable.c.Name == fence.name)
    ).first()
    if row is None:
        fence.lose("its row was deleted, by `face-assets unlock` or by hand")
    elif row.Owner != fence.owner or row.AcquiredAt != fence.acquired_at:
        fence.lose(f"taken over by {row.Owner}")
