"""The database server goes away in the middle of a batch.

The server is stopped at once (as by a crash or a power cut) while the detection step is inside
the transaction of a media item: after its claim, before its faces. Nothing may be left
half-written, the error must say what happened in one line, and the rerun, once the server is
back, must process every media item exactly once. The stub models: what is tested is the storage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image
from sqlalchemy import event, func, select
from sqlalchemy.exc import DBAPIError

from face_assets.core.face import detect_faces
from face_assets.core.settings import get_settings
from face_assets.core.storage.schema import FacesTable, MediaItemsTable
from face_assets.core.storage.store import DatabaseUnavailable, FaceStore
from face_assets.core.vision.detection import make_detector
from face_assets.resources import FaceStoreResource
from face_assets.runs import materialize_pipeline
from face_assets.sensors import build_new_media_items_sensor
from face_assets_devtools.servers import SERVERS, ThrowawayServer

STOP_AT_ITEM = 4  # the server dies while the 4th media item is being written


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[ThrowawayServer]:
    """A server of its own: this test stops it, which others must not see."""
    own = SERVERS[request.param]()
    yield own
    own.close()


def stop_server_inside_the_nth_item(store: FaceStore, server: ThrowawayServer, n: int) -> list[int]:
    """Stops `server` just before the faces of the n-th media item are inserted, i.e. inside
    that item's open transaction. Returns the list of items claimed so far (filled as it goes)."""
    claimed: list[int] = []

    def before_cursor_execute(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        text = " ".join(statement.split()).upper()
        if text.startswith("UPDATE") and "MEDIAITEMS" in text.replace('"', "").replace("`", ""):
            claimed.append(1)
        elif text.startswith("INSERT INTO") and "FACES" in text.split("(")[0] and len(claimed) == n:
            server.stop()

    event.listen(store.engine, "before_cursor_execute", before_cursor_execute)
    return claimed


def item_states(store: FaceStore) -> list[tuple[int, bool, int | None, int]]:
    """(media item, processed, FaceCount, face rows) for every media item."""
    face_rows = (
        select(func.count(FacesTable.c.Id))
        .where(FacesTable.c.MediaItemId == MediaItemsTable.c.Id)
        .scalar_subquery()
    )
    query = select(
        MediaItemsTable.c.Id, MediaItemsTable.c.IsFacesExtracted, MediaItemsTable.c.FaceCount, face_rows
    ).order_by(MediaItemsTable.c.Id)
    with store.engine.connect() as conn:
        return [(r[0], bool(r[1]), r[2], r[3]) for r in conn.execute(query)]


def test_a_server_stopped_mid_batch_loses_nothing_and_the_rerun_finishes_once(
    server: ThrowawayServer,
    stub_photo_folder: Path,
    stub_models: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = server.new_database()
    FaceStore.from_url(url, upgrade=True).dispose()  # `face-assets db init`
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_pipeline(
        stub_photo_folder, database_url=url, instance=instance, steps=["register"]
    ).success
    store = FaceStore.from_url(url)
    items = len(item_states(store))
    assert items > STOP_AT_ITEM + 2
    stop_server_inside_the_nth_item(store, server, STOP_AT_ITEM)
    settings = get_settings()
    detector = make_detector(settings.detector, settings.models_dir)

    with caplog.at_level(logging.INFO), pytest.raises(DatabaseUnavailable) as failure:
        detect_faces(store, detector)

    message = str(failure.value)
    assert "\n" not in message and "database" in message and f"media item {STOP_AT_ITEM}" in message
    assert url.split("@")[0].split(":")[-1] not in message  # no password
    # Logged once (the error carries it to the user, who would otherwise read it twice).
    assert [r.getMessage() for r in caplog.records].count(message) == 1

    server.start()
    states = item_states(store)
    done = [s for s in states if s[1]]
    # The items written before the crash are complete; the one being written left no trace.
    assert len(done) == STOP_AT_ITEM - 1
    assert all(count == rows for _, _, count, rows in done)
    assert all(rows == 0 and count is None for _, processed, count, rows in states if not processed)
    assert store.half_processed_media_items() == []

    # The rerun, through Dagster as a user would start it, finishes the batch: each item once.
    run = materialize_pipeline(database_url=url, thumbnail_dir=tmp_path / "thumbnails", instance=instance)
    assert run.success
    assert run.metadata()["detected_faces"]["media_items"] == items - (STOP_AT_ITEM - 1)
    states = item_states(store)
    assert all(processed and count == rows for _, processed, count, rows in states)
    with store.engine.connect() as conn:
        boxes = conn.execute(select(FacesTable.c.MediaItemId, FacesTable.c.BoundingBox)).all()
    assert len(boxes) == len(set(boxes))  # no face written twice
    counts = store.counts()
    assert counts["faces_embedded"] == counts["faces"] and counts["media_items_pending"] == 0
    store.dispose()


def test_a_sensor_tick_while_the_server_is_down_says_so_and_the_next_one_carries_on(
    server: ThrowawayServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.new_database()
    store = FaceStore.from_url(url, upgrade=True)
    photo = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(photo)
    assert store.register_media_file(photo, "PNG", photo.stat().st_size) is not None
    store.dispose()
    monkeypatch.setenv("DATABASE_URL", url)
    instance = dg.DagsterInstance.ephemeral()
    sensor = build_new_media_items_sensor(get_settings())

    def tick() -> dg.SensorResult | dg.SkipReason:
        with dg.build_sensor_context(
            instance=instance, resources={"face_store": FaceStoreResource()}
        ) as context:
            return sensor(context)

    server.stop()
    down = tick()
    assert isinstance(down, dg.SkipReason)
    message = str(down.skip_message)
    assert message.startswith("database unavailable: cannot connect") and "\n" not in message
    assert "face-assets-test" not in message  # the password

    server.start()
    up = tick()
    assert isinstance(up, dg.SensorResult) and len(up.run_requests) == 1


def test_a_connection_lost_inside_any_command_is_reported_in_one_line(server: ThrowawayServer) -> None:
    from face_assets.cli import _user_error

    store = FaceStore.from_url(server.new_database(), upgrade=True)
    server.stop()
    with pytest.raises(DBAPIError) as lost:
        store.counts()  # a command half-way through its work
    store.dispose()
    try:
        raise RuntimeError("a Dagster step failed") from lost.value  # as a run wraps it
    except RuntimeError as wrapped:
        reported = _user_error(wrapped)
    assert isinstance(reported, DatabaseUnavailable)
    message = str(reported)
    assert message.startswith("the database went away (") and "\n" not in message
    assert "SELECT" not in message and "face-assets-test" not in message
