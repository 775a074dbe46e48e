"""The persons lock after a crash: a holder that is gone is seen at once and its lock taken over,
a live holder keeps it, and a lock can be released by hand."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Column, DateTime, MetaData, String, Table, Unicode, inspect, select, update

from face_assets.core.storage import locks
from face_assets.core.storage.engine import make_engine
from face_assets.core.storage.errors import LockHeld, LockLost
from face_assets.core.storage.schema import LocksTable, MediaFileTable, utcnow
from face_assets.core.storage.store import FaceStore
from face_assets_tests.conftest import url_of

HOLD = """
import sys, time
from face_assets.core.storage.store import FaceStore
store = FaceStore.from_url(sys.argv[1])
with store.lock("person_clusters", "Dagster run killed-one"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def store(db_url: str) -> FaceStore:
    return FaceStore.from_url(db_url, upgrade=True)


@pytest.fixture
def holder(store: FaceStore) -> Iterator[subprocess.Popen[str]]:
    """Another process on this host that holds the persons lock until it is killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, url_of(store)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    yield process
    process.kill()
    process.wait()


def test_a_killed_holder_on_this_host_is_taken_over_at_once(
    store: FaceStore, holder: subprocess.Popen[str], caplog: pytest.LogCaptureFixture
) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), store.lock("person_clusters", "the next run"):
        assert store.lock_holder("person_clusters").owner == "the next run"  # type: ignore[union-attr]
    assert time.monotonic() - started < 5
    (previous, why), *rest = store.taken_over_locks()
    assert rest == [] and store.taken_over_locks() == []
    assert previous.owner == "Dagster run killed-one" and previous.pid == holder.pid
    assert why.startswith(f"its process {holder.pid} on ") and why.endswith(" is gone")
    assert f"took over the lock person_clusters from Dagster run killed-one: {why}" in caplog.text
    assert store.lock_holder("person_clusters") is None  # released after the block


def test_a_live_holder_keeps_the_lock_and_the_refusal_says_how_to_release_it(
    store: FaceStore, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(LockHeld) as refused:
        with store.lock("person_clusters", "the next run", wait_seconds=0.5):
            pass
    message = str(refused.value)
    assert f"held by Dagster run killed-one (process {holder.pid} on " in message
    assert "`face-assets unlock person_clusters`" in message
    assert store.taken_over_locks() == []
    released = store.release_lock("person_clusters")
    assert released is not None and released.pid == holder.pid
    with store.lock("person_clusters", "the next run"):
        pass


def test_a_holder_on_another_host_is_taken_over_once_its_heartbeat_stops(store: FaceStore) -> None:
    with store.lock("person_clusters", "a worker elsewhere"):
        # The row as a process on another machine left it: its pid means nothing here.
        with store.engine.begin() as conn:
            conn.execute(update(LocksTable).values(Host="another-machine", Pid=1))
        with pytest.raises(LockHeld):
            with store.lock("person_clusters", "the next run"):
                pass
        old = utcnow() - timedelta(seconds=locks.LOCK_STALE_S + 60)
        with store.engine.begin() as conn:
            conn.execute(update(LocksTable).values(HeartbeatAt=old, AcquiredAt=old))
        with store.lock("person_clusters", "the next run"):
            ((previous, why),) = store.taken_over_locks()
    assert previous.host == "another-machine" and why.startswith("no heartbeat since ")


def test_the_holder_beats_its_heartbeat_while_it_holds(
    store: FaceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locks, "HEARTBEAT_S", 0.05)
    with store.lock("person_clusters", "a long clustering"):
        first = store.lock_holder("person_clusters")
        time.sleep(1.3)  # MariaDB's DATETIME keeps whole seconds
        later = store.lock_holder("person_clusters")
    assert first is not None and later is not None and first.heartbeat_at is not None
    assert later.heartbeat_at > first.heartbeat_at and later.acquired_at == first.acquired_at  # type: ignore[operator]


def test_an_upgrade_adds_the_holder_columns_to_a_lock_table_of_an_earlier_release(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'earlier.db'}"
    earlier = MetaData()
    Table(
        "FaceAssetsLocks", earlier, Column("Name", String(64), primary_key=True),
        Column("Owner", Unicode(255), nullable=False), Column("AcquiredAt", DateTime, nullable=False),
    )  # fmt: skip
    engine = make_engine(url)
    earlier.create_all(engine)
    store = FaceStore.from_url(url, upgrade=True)
    columns = {c["name"] for c in inspect(engine).get_columns("FaceAssetsLocks")}
    assert {"Host", "Pid", "HeartbeatAt"} <= columns
    with store.lock("person_clusters", "after the upgrade"):
        assert store.lock_holder("person_clusters").pid is not None  # type: ignore[union-attr]


def _taken_over_behind_its_back(store: FaceStore) -> FaceStore:
    """What another machine does when the holder looks dead (a paused VM, a heartbeat that
    could not reach the database): it takes the lock over. Returns that machine's store."""
    old = utcnow() - timedelta(seconds=locks.LOCK_STALE_S + 60)
    with store.engine.begin() as conn:
        conn.execute(update(LocksTable).values(Host="another-machine", Pid=1, HeartbeatAt=old))
    return FaceStore.from_url(url_of(store))


def test_a_holder_whose_lock_was_taken_over_writes_nothing_more(store: FaceStore, tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"\xff\xd8\xff")
    with store.lock("person_clusters", "a clustering that slept"):
        store.register_media_files([(tmp_path / "before.jpg", "jpeg", 3)])  # still its own
        other = _taken_over_behind_its_back(store)
        with other.lock("person_clusters", "the next run"):
            with pytest.raises(LockLost) as refused:
                store.register_media_files([(photo, "jpeg", 3)])
            # The one who took it over writes as usual.
            other.register_media_files([(tmp_path / "theirs.jpg", "jpeg", 3)])
            assert "lost the lock person_clusters (taken over by the next run)" in str(refused.value)
            with pytest.raises(LockLost):  # and every later write too
                store.register_media_files([(photo, "jpeg", 3)])
    with store.engine.connect() as conn:
        names = set(conn.execute(select(MediaFileTable.c.FileName)).scalars())
    assert names == {"before.jpg", "theirs.jpg"}


def test_the_old_holders_exit_leaves_the_new_holders_lock(store: FaceStore) -> None:
    with store.lock("person_clusters", "a clustering that slept"):
        other = _taken_over_behind_its_back(store)
        released = threading.Event()
        holding = threading.Event()

        def next_run() -> None:
            with other.lock("person_clusters", "the next run"):
                holding.set()
                released.wait(30)

        thread = threading.Thread(target=next_run)
        thread.start()
        assert holding.wait(30)
    try:
        holder = store.lock_holder("person_clusters")
        assert holder is not None and holder.owner == "the next run"
    finally:
        released.set()
        thread.join()


def test_the_heartbeat_tells_the_holder_at_once(
    store: FaceStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(locks, "HEARTBEAT_S", 0.05)
    with caplog.at_level(logging.WARNING), store.lock("person_clusters", "a clustering that slept"):
        # The row as another machine's takeover writes it (a beat of the holder's own, every
        # 50 ms here, would make a real takeover race with it).
        with store.engine.begin() as conn:
            conn.execute(
                update(LocksTable).values(
                    Owner="the next run",
                    AcquiredAt=utcnow(),
                    HeartbeatAt=utcnow(),
                    Host="another-machine",
                    Pid=1,
                )  # fmt: skip
            )
        deadline = time.monotonic() + 10
        while "lost the lock person_clusters" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(LockLost):
            store.register_media_files([(Path("late.jpg"), "jpeg", 3)])
    assert "lost the lock person_clusters: taken over by the next run" in caplog.text
    assert store.lock_holder("person_clusters").owner == "the next run"  # type: ignore[union-attr]
