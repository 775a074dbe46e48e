"""Asset checks catch broken invariants; the folder inbox sensor registers new files."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from face_assets.checks import (
    ALL_CHECKS,
    BATCH_CHECKS,
    embeddings_are_unit_512,
    faces_point_at_existing_persons,
    library_embeddings_are_unit_512,
    library_has_no_half_processed_media_items,
    no_half_processed_media_items,
)
from face_assets.core.settings import get_settings
from face_assets.core.storage.store import FaceStore, encode_embedding
from face_assets.core.vision.types import DetectedFace
from face_assets.resources import FaceStoreResource
from face_assets.runs import materialize_pipeline
from face_assets.sensors import build_media_folder_sensor
from face_assets_tests.conftest import sql, url_of, without_foreign_keys

FACE = DetectedFace((2.0, 2.0, 20.0, 20.0), 0.99, ((5.0, 5.0),) * 5)


@pytest.fixture
def store_with_faces(tmp_path: Path, db_url: str) -> tuple[FaceStore, FaceStoreResource, list[int]]:
    """Three processed media items with one embedded face each, written through the store."""
    store = FaceStore.from_url(db_url, upgrade=True)
    face_ids = []
    for index in range(3):
        path = tmp_path / f"{index}.png"
        Image.new("RGB", (32, 32)).save(path)
        item = store.register_media_file(path, "PNG", path.stat().st_size)
        assert item is not None and store.save_detection(item, [FACE], "stub", (32, 32))
        face_ids += [r.id for r in store.faces_without_embedding() if r.media_item_id == item]
    vectors = np.random.default_rng(0).normal(size=(3, 512)).astype(np.float32)
    store.save_embeddings(face_ids, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), "stub")
    return store, FaceStoreResource(database_url=url_of(store)), face_ids


def run_check(check: dg.AssetChecksDefinition, resource: FaceStoreResource) -> dg.AssetCheckResult:
    """A check executed on its own, as from the UI: a batch check without a batch looks at the
    whole library."""
    if check in BATCH_CHECKS:
        return check(dg.build_asset_check_context(), face_store=resource)
    return check(face_store=resource)


def test_checks_pass_on_a_sound_database(store_with_faces) -> None:
    _, resource, _ = store_with_faces
    for check in ALL_CHECKS:
        assert run_check(check, resource).passed, check.name


@pytest.mark.parametrize(
    "vector", [np.full(512, np.nan, np.float32), np.ones(512, np.float32), np.zeros(128, np.float32)]
)
def test_embedding_check_fails_on_nan_wrong_norm_or_wrong_size(store_with_faces, vector) -> None:
    store, resource, face_ids = store_with_faces
    with store.engine.begin() as conn:
        conn.execute(sql(conn, 'UPDATE "Faces" SET "Embedding" = :e WHERE "Id" = :i'),
                     {"e": encode_embedding(vector), "i": face_ids[1]})  # fmt: skip
    for check in (embeddings_are_unit_512, library_embeddings_are_unit_512):
        result = run_check(check, resource)
        assert not result.passed
        assert f"face {face_ids[1]}" in result.metadata["problems"].value


def test_half_processed_item_and_dangling_person_are_caught(store_with_faces) -> None:
    store, resource, face_ids = store_with_faces
    # Another application's writes, on a connection without foreign key enforcement.
    with store.engine.connect() as conn:
        without_foreign_keys(conn)
        conn.execute(
            sql(conn, 'UPDATE "MediaItems" SET "IsFacesExtracted" = :no WHERE "Id" = :i'),
            {"no": False, "i": min(store.faces_of_media_items())},
        )
        conn.execute(sql(conn, 'UPDATE "Faces" SET "PersonId" = 999 WHERE "Id" = :f'), {"f": face_ids[2]})
        conn.commit()
    for check in (no_half_processed_media_items, library_has_no_half_processed_media_items):
        assert not run_check(check, resource).passed
    assert not faces_point_at_existing_persons(face_store=resource).passed


def tick(cursor: str | None) -> dg.SensorResult | dg.SkipReason:
    sensor = build_media_folder_sensor(get_settings())
    instance, resources = dg.DagsterInstance.ephemeral(), {"face_store": FaceStoreResource()}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return sensor(context)


def test_folder_inbox_registers_new_files_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, photo_folder: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    monkeypatch.setenv("FACE_ASSETS_MEDIA_DIR", str(inbox))
    db_url = f"sqlite:///{tmp_path / 'faces.db'}"
    shutil.copy(photo_folder / "other" / "gradient.png", inbox / "a.png")

    first = tick(None)
    assert isinstance(first, dg.SensorResult) and len(first.run_requests) == 1
    assert isinstance(tick(first.cursor), dg.SkipReason)  # nothing changed, nothing requested

    # A photo copied in with an old modification time is still a change of the folder.
    shutil.copy2(next((photo_folder / "ben_afflek").glob("*.jpg")), inbox / "b.jpg")
    second = tick(first.cursor)
    assert isinstance(second, dg.SensorResult) and len(second.run_requests) == 1

    folder = second.run_requests[0].run_config["ops"]["media_items"]["config"]["folder"]
    instance = dg.DagsterInstance.ephemeral()
    for _ in range(2):
        assert materialize_pipeline(
            Path(folder), database_url=db_url, instance=instance, steps=["register"]
        ).success
    assert FaceStore.from_url(db_url).counts()["media_items"] == 2


def test_folder_inbox_skips_without_a_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACE_ASSETS_MEDIA_DIR", raising=False)
    result = tick(None)
    assert isinstance(result, dg.SkipReason) and "FACE_ASSETS_MEDIA_DIR" in str(result.skip_message)
