"""An existing deployment's database: legacy columns only, rows written by the legacy tools.

The upgrade adds the product's columns without touching a legacy value, and the pipeline uses
the legacy data: new photos of a person the legacy tools found (embeddings stored as raw bytes
for one, as JSON text for the other) join that person, and nothing legacy is detected again.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import Column, MetaData, Table, insert, inspect, select, update

from face_assets.core.storage.engine import make_engine
from face_assets.core.storage.schema import LEGACY_COLUMNS, PRODUCT_COLUMNS, FacesTable, metadata
from face_assets.core.storage.store import FaceStore
from face_assets.runs import materialize_pipeline
from face_assets_tests.conftest import BACKENDS, new_database_url

pytestmark = pytest.mark.slow

# Faces the legacy tools found and grouped: Unknown-1 kept raw float32 bytes, Unknown-2 JSON text.
LEGACY_PERSONS = {"ben_afflek": ("Unknown-1", "bytes"), "madonna": ("Unknown-2", "json")}
NEW_IDENTITY = "elton_john"  # no legacy person
STAMP = datetime(2021, 3, 4, 10, 0, 0)


def legacy_metadata() -> MetaData:
    """The four tables as existing deployments have them: the legacy columns and nothing else."""
    legacy = MetaData()
    for table in metadata.sorted_tables:
        if table.name in LEGACY_COLUMNS:
            columns: list[Column] = [c._copy() for c in table.columns if c.name in LEGACY_COLUMNS[table.name]]
            Table(table.name, legacy, *columns)
    return legacy


def legacy_snapshot(url: str) -> dict[str, list[tuple]]:
    """Every legacy column of every row, in Id order."""
    engine = make_engine(url)
    tables = legacy_metadata().tables
    with engine.connect() as conn:
        snapshot = {
            name: [tuple(r) for r in conn.execute(select(table).order_by(table.c.Id))]
            for name, table in tables.items()
        }
    engine.dispose()
    return snapshot


def faces_found_by_the_product(folder: Path, workdir: Path) -> dict[str, list[tuple[list[int], np.ndarray]]]:
    """Boxes and embeddings of the photos in `folder`, by identity: the legacy tools' output,
    computed here with the same real models on a scratch database."""
    url = f"sqlite:///{workdir / 'scratch.db'}"
    assert materialize_pipeline(
        folder, database_url=url, thumbnail_dir=workdir / "scratch-thumbnails",
        instance=dg.DagsterInstance.ephemeral(), steps=["register", "detect", "embed"],
    ).success  # fmt: skip
    store = FaceStore.from_url(url)
    paths = {i: p for p, i in store.media_items_by_path().items()}
    data = store.face_embeddings()
    boxes = {f["id"]: f["box_xyxy"] for faces in store.faces_of_media_items().values() for f in faces}
    store.dispose()
    found: dict[str, list[tuple[list[int], np.ndarray]]] = {}
    for face_id, item_id, vector in zip(data.face_ids, data.media_item_ids, data.vectors, strict=True):
        # The legacy tools stored whole pixels.
        found.setdefault(paths[int(item_id)].parent.name, []).append(
            ([round(v) for v in boxes[int(face_id)]], vector)
        )
    return found


@pytest.fixture(params=BACKENDS)
def legacy_library(request: pytest.FixtureRequest, tmp_path: Path, celebrity_folder: Path, models_dir: Path):
    """A legacy database: 3 processed photos each of two persons, and 2 new photos of each of
    three identities that the legacy application registered but never processed."""
    old, new = tmp_path / "old", tmp_path / "new"
    for identity in [*LEGACY_PERSONS, NEW_IDENTITY]:
        photos = sorted((celebrity_folder / "train" / identity).glob("*.jpg"))
        if identity in LEGACY_PERSONS:
            (old / identity).mkdir(parents=True)
            for photo in photos[:3]:
                shutil.copy(photo, old / identity / photo.name)
        (new / identity).mkdir(parents=True)
        for photo in photos[3:5]:
            shutil.copy(photo, new / identity / photo.name)
    found = faces_found_by_the_product(old, tmp_path)

    url = new_database_url(request, request.param, tmp_path)
    engine = make_engine(url)
    tables = legacy_metadata().tables
    tables_of = {name: tables[name] for name in ("MediaFile", "MediaItems", "Persons", "Faces")}
    legacy_person: dict[str, int] = {}
    legacy_thumbnails: list[str] = []
    with engine.begin() as conn:
        legacy_metadata().create_all(conn)
        for identity, (name, _) in LEGACY_PERSONS.items():
            legacy_person[identity] = conn.execute(
                insert(tables_of["Persons"]).values(
                    Name=name, Type="Unknown", CreatedAt=STAMP, ModifiedAt=STAMP
                )
            ).inserted_primary_key[0]
        portrait_files: dict[str, int] = {}
        for index, photo in enumerate(sorted([*old.rglob("*.jpg"), *new.rglob("*.jpg")])):
            processed = old in photo.parents
            # The legacy tools wrote FilePath as the full path or as the folder: both occur.
            file_path = str(photo) if index % 2 else str(photo.parent)
            file_id = conn.execute(
                insert(tables_of["MediaFile"]).values(
                    FilePath=file_path,
                    FileName=photo.name,
                    Extensions="jpg",
                    CreatedAt=STAMP,
                    ModifiedAt=STAMP,
                )
            ).inserted_primary_key[0]
            item_id = conn.execute(
                insert(tables_of["MediaItems"]).values(
                    MediaFileId=file_id, Name=photo.name, IsFacesExtracted=processed,
                    FacesExtractedOn=STAMP if processed else None,
                )
            ).inserted_primary_key[0]  # fmt: skip
            if not processed:
                continue
            identity = photo.parent.name
            portrait_files.setdefault(identity, file_id)
            box, vector = found[identity].pop(0)
            stored = (
                vector.astype("<f4").tobytes()
                if LEGACY_PERSONS[identity][1] == "bytes"
                else json.dumps([float(v) for v in vector]).encode("ascii")
            )
            if LEGACY_PERSONS[identity][1] == "bytes":
                legacy_thumbnails.append(f"face_{item_id}.jpg")
            conn.execute(
                insert(tables_of["Faces"]).values(
                    MediaItemId=item_id, PersonId=legacy_person[identity], BoundingBox=json.dumps(box),
                    Embedding=stored, FrameNumber=0, Name=f"face_{item_id}.jpg", IsUserVerified=False,
                    CreatedAt=STAMP, ModifiedAt=STAMP,
                )
            )  # fmt: skip
        for identity, file_id in portrait_files.items():  # the legacy application's choice
            conn.execute(
                update(tables_of["Persons"])
                .where(tables_of["Persons"].c.Id == legacy_person[identity])
                .values(PortraitMediaFileId=file_id)
            )
    engine.dispose()
    # The legacy tools' thumbnails of Unknown-1, in the thumbnail folder under their Name.
    thumbnails = tmp_path / "thumbnails"
    thumbnails.mkdir()
    for face_name in legacy_thumbnails:
        Image.new("RGB", (112, 112), (90, 60, 40)).save(thumbnails / face_name)
    return url, new, legacy_person, thumbnails


def test_upgrade_keeps_legacy_rows_and_the_pipeline_uses_them(legacy_library) -> None:
    url, new, legacy_person, thumbnails = legacy_library
    legacy_names = {p.name for p in thumbnails.iterdir()}
    assert len(legacy_names) == 3
    before = legacy_snapshot(url)
    assert len(before["Faces"]) == 6 and len(before["MediaItems"]) == 12

    with pytest.raises(RuntimeError, match="face-assets db init"):
        FaceStore.from_url(url, upgrade=False)  # a server database is never upgraded silently
    store = FaceStore(make_engine(url))
    changes = store.upgrade()  # what `face-assets db init` does
    assert {f"{t}.{c}" for t, names in PRODUCT_COLUMNS.items() for c in names} <= set(changes)
    assert store.upgrade() == []
    store.dispose()
    columns = {t: {c["name"] for c in inspect(make_engine(url)).get_columns(t)} for t in PRODUCT_COLUMNS}
    assert all(set(PRODUCT_COLUMNS[t]) <= columns[t] for t in PRODUCT_COLUMNS)

    run = materialize_pipeline(
        database_url=url, thumbnail_dir=thumbnails, instance=dg.DagsterInstance.ephemeral()
    )
    assert run.success
    assert run.metadata()["detected_faces"]["media_items"] == 6  # only the unprocessed rows

    # Every legacy value is as it was: the rows the legacy tools wrote, and the new rows'
    # legacy columns apart from those detection fills in.
    after = legacy_snapshot(url)
    for table in ("MediaFile", "Persons"):  # the portraits the legacy application chose stay
        assert after[table][: len(before[table])] == before[table]
    # ModifiedAt says when the product last wrote a row (thumbnail path, sharpness): it moves.
    assert LEGACY_COLUMNS["Faces"][-1] == "ModifiedAt"
    assert [r[:-1] for r in after["Faces"][:6]] == [r[:-1] for r in before["Faces"]]
    processed_before = [r for r in before["MediaItems"] if r[3]]
    assert [r for r in after["MediaItems"] if r[0] in {p[0] for p in processed_before}] == processed_before

    store = FaceStore.from_url(url)
    try:
        assert store.counts()["media_items_pending"] == 0
        items = {p: i for p, i in store.media_items_by_path().items()}
        faces = store.faces_of_media_items()
        for identity, person_id in legacy_person.items():
            for photo in sorted((new / identity).glob("*.jpg")):
                persons = {f["person_id"] for f in faces[items[photo.resolve()]]}
                # A new photo of a legacy person joins that person (bytes and JSON both read).
                assert person_id in persons, (identity, photo.name, persons)
        for photo in (new / NEW_IDENTITY).glob("*.jpg"):
            persons = {f["person_id"] for f in faces[items[photo.resolve()]]}
            assert not persons & set(legacy_person.values())
        names = {p["Name"] for p in store.person_summary()}
        assert {"Unknown-1", "Unknown-2"} <= names
        # Legacy thumbnails are adopted where they exist and made where they do not.
        with store.engine.connect() as conn:
            legacy_faces = conn.execute(
                select(FacesTable.c.Name, FacesTable.c.ThumbnailPath).where(FacesTable.c.Id <= 6)
            ).all()
        for name, thumbnail in legacy_faces:
            assert (thumbnails / thumbnail).is_file()
            assert (thumbnail == name) == ((thumbnails / name).is_file() and name in legacy_names)
    finally:
        store.dispose()

    again = materialize_pipeline(
        database_url=url, thumbnail_dir=thumbnails, instance=dg.DagsterInstance.ephemeral()
    )
    assert again.success and again.metadata()["detected_faces"]["media_items"] == 0
    assert legacy_snapshot(url) == after
