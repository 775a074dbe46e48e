"""Ids are never reused: a person forgotten keeps its Id to itself, on every backend."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import MetaData, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from face_assets.core import correction
from face_assets.core.storage.engine import make_engine
from face_assets.core.storage.schema import (
    FacesTable,
    MediaFileTable,
    MediaItemsTable,
    PersonsTable,
    metadata,
)
from face_assets.core.storage.store import FaceStore
from face_assets.core.vision.types import DetectedFace

FACE = DetectedFace(box_xyxy=(10.0, 10.0, 50.0, 60.0), score=0.99, landmarks=((20.0, 30.0),) * 5)


def _person_with_faces(store: FaceStore, folder: Path, name: str, photos: int) -> tuple[int, list[int]]:
    """A person, as another application writes it, with one face in each of `photos` photos."""
    with store.engine.begin() as conn:
        person = conn.execute(insert(PersonsTable).values(Name=name)).inserted_primary_key[0]  # type: ignore[index]
    items = []
    for i in range(photos):
        item = store.register_media_file(folder / f"{name}-{i}.jpg", "JPEG", 1000)
        assert item is not None and store.save_detection(item, [FACE], "test", (100, 100))
        items.append(item)
    with store.engine.begin() as conn:
        conn.execute(update(FacesTable).where(FacesTable.c.MediaItemId.in_(items)).values(PersonId=person))
        faces = list(conn.execute(select(FacesTable.c.Id).where(FacesTable.c.PersonId == person)).scalars())
    return int(person), faces


def test_a_forgotten_persons_id_is_never_given_to_another(db_url: str, tmp_path: Path) -> None:
    store = FaceStore.from_url(db_url, upgrade=True)
    first, faces = _person_with_faces(store, tmp_path, "first", 2)
    last, _ = _person_with_faces(store, tmp_path, "last", 1)
    assert last > first

    correction.forget_person(store, last, tmp_path / "thumbnails")
    new = correction.split_person(store, first, faces[:1]).person_id

    assert new > last, "a new person took the Id of the person just forgotten"
    store.dispose()


def _without_autoincrement() -> MetaData:
    """The tables as an earlier release made them on SQLite: Ids that SQLite hands out again."""
    earlier = MetaData()
    for table in metadata.sorted_tables:
        Table(table.name, earlier, *[c._copy() for c in table.columns])
    return earlier


def test_an_earlier_sqlite_database_stops_reusing_ids_and_keeps_its_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'earlier.db'}"
    engine = make_engine(url)
    earlier = _without_autoincrement()
    earlier.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql('ALTER TABLE "Persons" ADD "Nickname" VARCHAR(20)')  # another tool's column
        conn.execute(insert(MediaFileTable), [{"Id": 1, "FilePath": "/photos", "FileName": "a.jpg"}])
        conn.execute(insert(MediaItemsTable), [{"Id": 1, "MediaFileId": 1, "Name": "a.jpg"}])
        for person in (1, 2, 3):
            conn.exec_driver_sql(
                'INSERT INTO "Persons" ("Id", "Name", "Nickname") '
                f"VALUES ({person}, 'P{person}', 'n{person}')"
            )
        conn.execute(
            insert(FacesTable), [{"Id": 7, "MediaItemId": 1, "PersonId": 2, "BoundingBox": "[1, 2, 3, 4]"}]
        )
        conn.exec_driver_sql('DELETE FROM "Persons" WHERE "Id" = 3')
        reused = conn.execute(insert(PersonsTable).values(Name="again")).inserted_primary_key[0]  # type: ignore[index]
    assert reused == 3, "the earlier schema should reuse the deleted Id (else this test proves nothing)"
    engine.dispose()

    store = FaceStore.from_url(url, upgrade=True)
    with store.engine.begin() as conn:
        persons = conn.exec_driver_sql('SELECT "Id", "Name", "Nickname" FROM "Persons" ORDER BY "Id"').all()
        assert [tuple(p) for p in persons] == [(1, "P1", "n1"), (2, "P2", "n2"), (3, "again", None)]
        assert conn.execute(select(FacesTable.c.PersonId).where(FacesTable.c.Id == 7)).scalar_one() == 2
        conn.exec_driver_sql('DELETE FROM "Persons" WHERE "Id" = 3')
        fresh = conn.execute(insert(PersonsTable).values(Name="new")).inserted_primary_key[0]  # type: ignore[index]
    assert fresh == 4
    # The other tables' references still hold: a face cannot point at a person that is not there.
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(insert(FacesTable), [{"MediaItemId": 1, "PersonId": 99, "BoundingBox": "[1, 2, 3, 4]"}])
    store.dispose()
