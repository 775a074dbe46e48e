"""End to end through Dagster on a real database on each backend: the stub models in the fast
lane, real photos and the real models in the full suite."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import insert, select

from face_assets.core.storage.schema import FacesTable, MediaFileTable, MediaItemsTable, PersonsTable
from face_assets.core.storage.store import FaceStore, decode_embedding
from face_assets.runs import PipelineRun, materialize_pipeline
from face_assets_tests.conftest import (
    BACKENDS,
    IDENTITIES,
    MODELS,
    PHOTOS_PER_IDENTITY,
    TWO_FACE_PHOTO,
    library_of,
    models,
    new_database_url,
)


def run_pipeline(folder: Path, db_url: str, thumbnails: Path) -> PipelineRun:
    return materialize_pipeline(
        folder, database_url=db_url, thumbnail_dir=thumbnails, instance=dg.DagsterInstance.ephemeral()
    )


def snapshot(store: FaceStore, thumbnails: Path) -> dict[str, object]:
    """Everything a run could change: every row of every table and every thumbnail file."""
    tables = {}
    with store.engine.connect() as conn:
        for table in (MediaFileTable, MediaItemsTable, FacesTable, PersonsTable):
            tables[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(table.c.Id))]
    files = {
        str(p.relative_to(thumbnails)): p.stat().st_mtime_ns for p in thumbnails.rglob("*") if p.is_file()
    }
    return {"tables": tables, "files": files}


@dataclass
class Processed:
    """A library run once through the pipeline; `rerun` runs it again on the same models."""

    kind: str
    folder: Path
    store: FaceStore
    thumbnails: Path
    db_url: str
    result: PipelineRun

    def rerun(self) -> PipelineRun:
        with models(self.kind):
            return run_pipeline(self.folder, self.db_url, self.thumbnails)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module", params=MODELS)
def processed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, backend: str):
    kind = request.param
    folder = library_of(request, kind)
    root = tmp_path_factory.mktemp("processed")
    db_url = new_database_url(request, backend, root)
    FaceStore.from_url(db_url, upgrade=True).dispose()  # `face-assets db init`
    with models(kind):
        result = run_pipeline(folder, db_url, root / "thumbnails")
    return Processed(kind, folder, FaceStore.from_url(db_url), root / "thumbnails", db_url, result)


def test_pipeline_materialises_every_asset(processed: Processed) -> None:
    result = processed.result
    assert result.success
    meta = result.metadata()
    assert list(meta) == [
        "media_items",
        "detected_faces",
        "face_thumbnails",
        "face_embeddings",
        "face_persons",
        "person_clusters",
        "person_gallery",
    ]
    photos = len(IDENTITIES) * PHOTOS_PER_IDENTITY + 2  # + the two-face photo + the non-face image
    assert meta["media_items"]["registered"] == photos
    assert meta["detected_faces"]["media_items"] == photos
    assert meta["detected_faces"]["errors"] == 0


def test_every_media_item_is_processed_with_its_faces(processed: Processed) -> None:
    store, photo_folder = processed.store, processed.folder
    faces = store.faces_of_media_items()
    items = store.media_items_by_path()
    assert store.counts()["media_items_pending"] == 0
    assert len(faces[items[(photo_folder / TWO_FACE_PHOTO).resolve()]]) == 2
    # The non-face image has no face, yet it is marked processed and will not be re-detected.
    gradient = items[(photo_folder / "other" / "gradient.png").resolve()]
    assert gradient not in faces
    with store.engine.connect() as conn:
        row = conn.execute(select(MediaItemsTable).where(MediaItemsTable.c.Id == gradient)).mappings().one()
    assert row["IsFacesExtracted"] and row["FacesExtractedOn"] is not None and row["FaceCount"] == 0
    for identity in IDENTITIES:
        for photo in (photo_folder / identity).glob("*.jpg"):
            assert len(faces[items[photo.resolve()]]) >= 1, photo


def test_faces_have_boxes_thumbnails_and_unit_embeddings(processed: Processed) -> None:
    store, thumbnails = processed.store, processed.thumbnails
    model = "stub" if processed.kind == "stub" else "facenet-20180402-114759"
    with store.engine.connect() as conn:
        rows = conn.execute(select(FacesTable)).mappings().all()
    assert rows
    names = set()
    for row in rows:
        vector = decode_embedding(row["Embedding"])
        assert vector is not None and vector.shape == (512,) and vector.dtype == np.float32
        assert not np.isnan(vector).any() and abs(np.linalg.norm(vector) - 1.0) < 1e-4
        assert row["EmbeddingModel"] == model
        assert 0.9 <= row["DetectionScore"] <= 1.0
        x1, y1, x2, y2 = __import__("json").loads(row["BoundingBox"])
        assert x2 > x1 and y2 > y1
        with Image.open(thumbnails / row["ThumbnailPath"]) as thumbnail:
            assert thumbnail.size == (112, 112)
        assert row["Name"] == Path(row["ThumbnailPath"]).name
        names.add(row["Name"])
    assert len(names) == len(rows)  # thumbnail names never collide


def test_persons_match_the_identities(processed: Processed) -> None:
    store, photo_folder = processed.store, processed.folder
    faces = store.faces_of_media_items()
    items = store.media_items_by_path()
    persons_by_identity = {}
    for identity in IDENTITIES:
        labelled = [max(faces[items[p.resolve()]], key=lambda f: (f["box_xyxy"][2] - f["box_xyxy"][0]))
                    for p in (photo_folder / identity).glob("*.jpg")]  # fmt: skip
        assigned = [f["person_id"] for f in labelled if f["person_id"] is not None]
        # Every assigned photo of one identity is one person; an outlier photo may wait unassigned.
        assert len(set(assigned)) == 1, (identity, assigned)
        assert len(assigned) >= len(labelled) - 1, (identity, assigned)
        persons_by_identity[identity] = assigned[0]
    assert len(set(persons_by_identity.values())) == len(IDENTITIES)
    # Two faces of one photo are never the same person.
    two = faces[items[(photo_folder / TWO_FACE_PHOTO).resolve()]]
    assert two[0]["person_id"] is None or two[0]["person_id"] != two[1]["person_id"]
    names = [p["Name"] for p in store.person_summary()]
    assert len(names) == len(set(names))


def test_rerun_on_unchanged_data_changes_nothing(processed: Processed) -> None:
    before = snapshot(processed.store, processed.thumbnails)
    result = processed.rerun()
    assert result.success
    assert snapshot(processed.store, processed.thumbnails) == before
    meta = result.metadata()
    assert meta["media_items"]["registered"] == 0
    assert meta["detected_faces"]["media_items"] == 0
    assert meta["person_clusters"]["new_persons"] == 0


def test_bad_input_is_recorded_and_the_rest_is_processed(
    tmp_path: Path, db_url: str, stub_photo_folder: Path, stub_models: None
) -> None:
    """Files the models never see: the stub models suffice."""
    photo_folder = stub_photo_folder
    folder = tmp_path / "photos"
    good = sorted((photo_folder / IDENTITIES[0]).glob("*.jpg"))[:2]
    folder.mkdir()
    for photo in good:
        shutil.copy(photo, folder / photo.name)
    data = good[0].read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.jpg").write_text("this is not a photo\n")
    store = FaceStore.from_url(db_url, upgrade=True)
    # Another application inserts rows for a text file and a file that does not exist.
    with store.engine.begin() as conn:
        for name in ("notes.jpg", "vanished.jpg"):
            file_id = conn.execute(
                insert(MediaFileTable).values(FilePath=str(folder), FileName=name)
            ).inserted_primary_key[0]
            conn.execute(insert(MediaItemsTable).values(MediaFileId=file_id, Name=name))

    result = run_pipeline(folder, db_url, tmp_path / "thumbnails")

    assert result.success
    meta = result.metadata()
    # notes.jpg in the folder is sniffed, named as skipped and not registered again.
    assert meta["media_items"]["skipped"] == 1
    (skipped_line,) = meta["media_items"]["skipped_files"]["lines"]
    assert skipped_line.startswith(f"{folder / 'notes.jpg'}: not an image")
    errors = {e["Name"]: e["ExtractionError"] for e in store.extraction_errors()}
    assert set(errors) == {"truncated.jpg", "notes.jpg", "vanished.jpg"}
    assert str(folder / "truncated.jpg") in errors["truncated.jpg"]
    assert "not an image" in errors["notes.jpg"]
    assert "not found" in errors["vanished.jpg"]
    assert meta["detected_faces"]["errors"] == 2
    # A missing file may come back (an unmounted share): it stays pending, to be tried again.
    assert meta["detected_faces"]["unreadable_retried_later"] == 1
    (unreadable_line,) = meta["detected_faces"]["unreadable_listed"]["lines"]
    assert unreadable_line.endswith("vanished.jpg: file not found")
    counts = store.counts()
    assert counts["media_items_pending"] == 1
    assert counts["faces"] >= len(good) and counts["faces_embedded"] == counts["faces"]
    # Embedded by detection, from the decode that found them: the embedding step had nothing left.
    assert meta["detected_faces"]["faces_embedded"] == counts["faces"]
    assert meta["face_embeddings"]["faces_embedded"] == 0


def test_a_media_folder_that_is_not_there_fails_the_step_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FACE_ASSETS_MEDIA_DIR with a typo or on an unmounted disk, as the Dagster CLI runs it."""
    from face_assets.assets import media_items
    from face_assets.definitions import make_resources

    missing = tmp_path / "Pictures"
    monkeypatch.setenv("FACE_ASSETS_MEDIA_DIR", str(missing))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'faces.db'}")
    result = dg.materialize([media_items], resources=make_resources(), raise_on_error=False)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    error = failure.step_failure_data.error
    assert error is not None and error.cause is None
    assert error.message.strip().endswith(
        f"{missing}: not a folder (FACE_ASSETS_MEDIA_DIR or the run's folder config)"
    )
