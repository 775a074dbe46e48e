"""The sensor's look for rows left pending inside batches it already covered."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert

from face_assets.core.batch import batch_key
from face_assets.core.storage.schema import MediaFileTable, MediaItemsTable, utcnow
from face_assets.core.storage.store import FaceStore
from face_assets.sensors import batches_with_pending


@pytest.fixture
def store(db_url: str) -> FaceStore:
    return FaceStore.from_url(db_url, upgrade=True)


def add_pending(store: FaceStore, ids: range | list[int]) -> None:
    """Pending rows with the given ids, as another application inserts them."""
    with store.engine.begin() as conn:
        files = [{"Id": i, "FilePath": "photos", "FileName": f"{i}.jpg"} for i in ids]
        conn.execute(insert(MediaFileTable), files)
        conn.execute(
            insert(MediaItemsTable),
            [{"Id": i, "MediaFileId": i, "Name": f"{i}.jpg", "IsFacesExtracted": False} for i in ids],
        )


def test_a_late_row_is_found_behind_thousands_waiting_in_a_failed_batch(store: FaceStore) -> None:
    # 1,500 rows wait in a batch whose run failed; a row of a later batch, committed after that
    # batch ran, must still be found (a scan of the oldest 1,000 pending rows never reached it).
    add_pending(store, range(1, 1501))
    add_pending(store, [1650])
    keys = [batch_key(1, 1500), batch_key(1501, 1600), batch_key(1601, 1700), batch_key(1701, 1800)]

    found = batches_with_pending(store, keys, covered=1800, retry_before=utcnow() + timedelta(seconds=1))

    assert found == [batch_key(1, 1500), batch_key(1601, 1700)]
