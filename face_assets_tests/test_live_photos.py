"""A Live Photo (IMG_1234.HEIC or .JPG beside the short movie IMG_1234.MOV) is one moment: its
movie is linked to the photo's media item, never detected, and its faces count once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select, text

from face_assets.core import correction
from face_assets.core.face import detect_faces
from face_assets.core.media_item import register_folder
from face_assets.core.storage.engine import upgrade_schema
from face_assets.core.storage.schema import FacesTable, MediaFileTable, MediaItemsTable, PersonsTable
from face_assets.core.storage.store import FaceStore
from face_assets.runs import materialize_pipeline
from face_assets_devtools.clips import Scene, make_clip
from face_assets_devtools.library import TwoFacesDetector


@pytest.fixture
def store(db_url: str) -> Iterator[FaceStore]:
    store = FaceStore.from_url(db_url, upgrade=True)
    yield store
    store.dispose()


def photo(path: Path, seed: int = 1) -> Path:
    """A real JPEG, as a phone's camera writes next to its movie."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    return path


def movie(path: Path, seconds: float = 2.0) -> Path:
    """A real QuickTime movie of `seconds`, under a name in any case (as phones write .MOV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = make_clip(path.with_name(f".{path.stem}.mov"), [Scene(seconds=seconds)], fps=5, size=(160, 120))
    return written.rename(path)


def items_by_file(store: FaceStore) -> dict[str, int]:
    """File name -> media item, for every media item."""
    query = select(MediaFileTable.c.FileName, MediaItemsTable.c.Id).join(
        MediaItemsTable, MediaItemsTable.c.MediaFileId == MediaFileTable.c.Id
    )
    with store.engine.connect() as conn:
        return {r.FileName: r.Id for r in conn.execute(query)}


def live_links(store: FaceStore) -> dict[str, str]:
    """Movie file name -> the file name of the photo it is linked to."""
    photos = MediaFileTable.alias("Photo")
    query = select(MediaFileTable.c.FileName, photos.c.FileName.label("Photo")).join(
        photos, photos.c.Id == MediaFileTable.c.LivePhotoOfMediaFileId
    )
    with store.engine.connect() as conn:
        return {r.FileName: r.Photo for r in conn.execute(query)}


def face_count(store: FaceStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(FacesTable)).scalar_one())


def test_a_live_photo_movie_is_linked_and_not_a_media_item_to_detect(
    store: FaceStore, tmp_path: Path
) -> None:
    library = tmp_path / "library"
    still = photo(library / "IMG_0001.JPG")
    clip = movie(library / "IMG_0001.mov")  # the names compared case-insensitively

    result = register_folder(store, library)

    assert items_by_file(store) == {"IMG_0001.JPG": result.added[0]} and len(result.added) == 1
    assert result.live_photo_movies == [(clip, result.added[0])]
    assert live_links(store) == {"IMG_0001.mov": "IMG_0001.JPG"}
    assert [i.path for i in store.pending_media_items()] == [still.resolve()]

    run = detect_faces(store, TwoFacesDetector())
    assert run.media_items == 1 and run.videos == 0
    assert set(store.faces_of_media_items()) == {result.added[0]}, "the photo's faces count once"
    assert face_count(store) == len(TwoFacesDetector().detect(np.zeros((1, 1, 3), np.uint8)))


def test_a_long_movie_with_the_same_name_is_a_video_of_its_own(store: FaceStore, tmp_path: Path) -> None:
    library = tmp_path / "library"
    photo(library / "IMG_0002.JPG")
    movie(library / "IMG_0002.MOV", seconds=6.0)

    result = register_folder(store, library)

    assert len(result.added) == 2 and not result.live_photo_movies
    assert set(items_by_file(store)) == {"IMG_0002.JPG", "IMG_0002.MOV"} and not live_links(store)


@pytest.mark.parametrize("names", [("IMG_0003.JPG", "IMG_0003.MOV"), ("img_0003.jpg", "IMG_0003.MOV")])
def test_the_movie_walked_before_or_after_its_photo_in_one_scan_is_linked(
    store: FaceStore, tmp_path: Path, names: tuple[str, str]
) -> None:
    """ "IMG_0003.MOV" sorts before "img_0003.jpg": the movie waits for the photos of the scan."""
    library = tmp_path / "library"
    photo(library / names[0])
    movie(library / names[1])

    result = register_folder(store, library)

    assert len(result.added) == 1 and len(result.live_photo_movies) == 1
    assert live_links(store) == {names[1]: names[0]}


def test_a_photo_registered_before_its_movie_takes_it_in_a_later_scan(
    store: FaceStore, tmp_path: Path
) -> None:
    library = tmp_path / "library"
    photo(library / "IMG_0003.JPG", seed=2)  # another photo, not named like the movie
    still = photo(library / "IMG_0004.JPG")
    first = register_folder(store, library)
    assert len(first.added) == 2

    movie(library / "IMG_0004.MOV")
    second = register_folder(store, library)

    assert not second.added and second.already_known == 2
    assert second.live_photo_movies == [(library / "IMG_0004.MOV", items_by_file(store)[still.name])]
    assert live_links(store) == {"IMG_0004.MOV": "IMG_0004.JPG"}


def test_a_movie_registered_and_processed_alone_gives_its_media_item_up_to_its_photo(
    store: FaceStore, tmp_path: Path
) -> None:
    """A sync copied the movie first: it was registered as a video and its faces detected;
    once its photo is there, the movie's media item and faces are retired, as the photo holds
    the same faces, and the persons' sums lose them."""
    library, thumbnails = tmp_path / "library", tmp_path / "thumbnails"
    movie(library / "IMG_0005.MOV")
    alone = register_folder(store, library, thumbnails)
    assert len(alone.added) == 1 and not alone.live_photo_movies
    assert detect_faces(store, TwoFacesDetector()).videos == 1
    video_faces = face_count(store)
    assert video_faces > 0

    photo(library / "IMG_0005.JPG")
    paired = register_folder(store, library, thumbnails)

    assert len(paired.added) == 1 and paired.retired_faces == video_faces
    assert paired.live_photo_movies == [(library / "IMG_0005.MOV", paired.added[0])]
    assert items_by_file(store) == {"IMG_0005.JPG": paired.added[0]}
    assert face_count(store) == 0 and live_links(store) == {"IMG_0005.MOV": "IMG_0005.JPG"}
    detect_faces(store, TwoFacesDetector())
    assert set(store.faces_of_media_items()) == {paired.added[0]}


def test_a_movie_whose_faces_a_user_placed_stays_a_media_item(store: FaceStore, tmp_path: Path) -> None:
    library = tmp_path / "library"
    movie(library / "IMG_0006.MOV")
    item = register_folder(store, library).added[0]
    detect_faces(store, TwoFacesDetector())
    face = next(iter(store.faces_of_media_items()[item]))["id"]
    with store.engine.begin() as conn:
        key = conn.execute(PersonsTable.insert().values(Name="Ama", EmbeddingCount=0)).inserted_primary_key
    assert key is not None
    person = key[0]
    correction.move_face(store, face, int(person))

    photo(library / "IMG_0006.JPG")
    result = register_folder(store, library)

    assert not result.live_photo_movies and not live_links(store)
    assert item in items_by_file(store).values() and face_count(store) > 0


def test_rescans_register_nothing_twice(store: FaceStore, tmp_path: Path) -> None:
    library = tmp_path / "library"
    photo(library / "IMG_0007.JPG")
    movie(library / "IMG_0007.MOV")
    register_folder(store, library)

    for _ in range(2):
        again = register_folder(store, library)
        assert not again.added and not again.live_photo_movies and again.already_known == 2
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(MediaFileTable)).scalar_one() == 2
        assert conn.execute(select(func.count()).select_from(MediaItemsTable)).scalar_one() == 1


def test_an_earlier_database_is_upgraded_with_the_link(store: FaceStore, tmp_path: Path) -> None:
    """A database made before Live Photos were told apart: the column is added, rows untouched."""
    quote = store.engine.dialect.identifier_preparer.quote
    with store.engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {quote('MediaFile')} DROP COLUMN {quote('LivePhotoOfMediaFileId')}"))
    assert "MediaFile.LivePhotoOfMediaFileId" in upgrade_schema(store.engine)
    assert "MediaFile.LivePhotoOfMediaFileId" not in upgrade_schema(store.engine)

    library = tmp_path / "library"
    photo(library / "IMG_0008.JPG")
    movie(library / "IMG_0008.MOV")
    assert len(register_folder(store, library).live_photo_movies) == 1


def test_the_registration_metadata_counts_live_photo_movies(tmp_path: Path) -> None:
    library = tmp_path / "library"
    photo(library / "IMG_0009.JPG")
    movie(library / "IMG_0009.MOV")
    run = materialize_pipeline(
        library,
        database_url=f"sqlite:///{tmp_path / 'faces.db'}",
        instance=dg.DagsterInstance.ephemeral(),
        steps=["register"],
    )
    assert run.success
    assert run.metadata()["media_items"]["live_photo_movies"] == 1
    assert run.metadata()["media_items"]["registered"] == 1
