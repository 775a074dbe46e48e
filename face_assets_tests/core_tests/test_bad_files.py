"""Bad files in a library: each is named with its reason, the rest of the folder goes on, and a
file that cannot be read now is tried again later while bad bytes are final."""

from __future__ import annotations

import struct
import subprocess
import zlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select, update

from face_assets.core.face import detect_faces
from face_assets.core.media_item import register_folder
from face_assets.core.storage.schema import FacesTable, utcnow
from face_assets.core.storage.store import FaceStore
from face_assets.core.thumbnail import ThumbnailFolderError, write_thumbnails
from face_assets.core.vision.transforms import MediaDecodeError, load_image
from face_assets.core.vision.types import DetectedFace
from face_assets_tests.core_tests.test_face_step import StubDetector


@pytest.fixture
def store(db_url: str) -> FaceStore:
    return FaceStore.from_url(db_url, upgrade=True)


def _photo(path: Path) -> Path:
    """A small photo of its own: two files of the same content would be one media item."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), zlib.crc32(str(path).encode()) % 256, dtype=np.uint8)).save(path)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_bomb(path: Path, side: int = 20_000) -> Path:
    """A PNG of a few hundred bytes whose header promises side x side pixels."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    row = b"\x00" + b"\x00" * 3 * side
    data = zlib.compress(row * 4, 9)
    chunks = _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def test_an_oversized_image_is_skipped_and_the_files_after_it_are_registered(
    store: FaceStore, tmp_path: Path
) -> None:
    library = tmp_path / "library"
    first = _photo(library / "a.png")
    bomb = write_png_bomb(library / "m_huge.png")
    last = _photo(library / "z.png")
    assert bomb.stat().st_size < 100_000

    result = register_folder(store, library)

    assert dict(result.skipped).keys() == {bomb}
    assert "too many pixels" in dict(result.skipped)[bomb]
    assert {item.path for item in store.pending_media_items()} == {first.resolve(), last.resolve()}
    with pytest.raises(MediaDecodeError, match="too many pixels") as raised:
        load_image(bomb)
    assert not raised.value.transient  # bad bytes do not get better: final


def test_every_file_that_looks_like_a_photo_and_is_not_is_named(store: FaceStore, tmp_path: Path) -> None:
    library = tmp_path / "library"
    good = _photo(library / "good.jpg")
    (library / "empty.jpg").write_bytes(b"")
    (library / "text.jpg").write_text("not a photo")
    (library / "notes.txt").write_text("shopping list")  # not media: counted, not named
    (library / "dangling.jpg").symlink_to(library / "deleted.jpg")
    (library / "loop.jpg").symlink_to(library / "loop.jpg")
    (library / "sub").mkdir()
    (library / "sub" / "back").symlink_to(library, target_is_directory=True)
    outside = _photo(tmp_path / "elsewhere" / "linked.png")
    (library / "linked").symlink_to(outside.parent, target_is_directory=True)

    result = register_folder(store, library)

    reasons = {path.name: reason for path, reason in result.skipped}
    assert reasons == {
        "empty.jpg": "empty file",
        "text.jpg": "not an image Pillow can decode",
        "dangling.jpg": "dangling symbolic link",
        "loop.jpg": "symbolic link loop",
        "back": "folder already scanned (a symbolic link loop or a second link to it)",
    }
    assert result.not_media == 1
    registered = {item.path for item in store.pending_media_items()}
    assert registered == {good.resolve(), outside.resolve()}  # a linked folder is followed once
    assert register_folder(store, library).already_known == 2


def test_a_missing_file_stays_pending_with_its_reason_and_is_detected_once_back(
    store: FaceStore, tmp_path: Path
) -> None:
    library = tmp_path / "library"
    kept = _photo(library / "kept.png")
    away = _photo(library / "on_share.png")
    register_folder(store, library)
    hidden = away.rename(tmp_path / "unmounted.png")  # the share is unmounted

    first = detect_faces(store, StubDetector())

    assert first.errors == [] and len(first.unreadable) == 1
    assert str(away) in first.unreadable[0] and "file not found" in first.unreadable[0]
    assert [item.path for item in store.pending_media_items()] == [away.resolve()]
    (failed,) = store.extraction_errors()
    assert "file not found" in failed["ExtractionError"]

    hidden.rename(away)  # mounted again
    second = detect_faces(store, StubDetector())

    assert second.media_items == 1 and second.faces == 1 and second.unreadable == []
    assert store.pending_media_items() == [] and store.extraction_errors() == []
    assert kept.exists()


def test_bad_bytes_are_final_until_requeued_on_purpose(store: FaceStore, tmp_path: Path) -> None:
    library = tmp_path / "library"
    broken = _photo(library / "broken.png")
    register_folder(store, library)
    broken.write_bytes(broken.read_bytes()[:40])  # truncated after registration

    run = detect_faces(store, StubDetector())
    assert len(run.errors) == 1 and run.unreadable == []
    assert store.pending_media_items() == []  # final: not retried by every run

    _photo(broken)  # the user restored the file from a backup
    assert store.requeue_failed() == 1
    assert detect_faces(store, StubDetector()).faces == 1
    assert store.extraction_errors() == [] and store.requeue_failed() == 0


def test_an_unreadable_item_waits_before_the_sensor_tries_it_again(store: FaceStore, tmp_path: Path) -> None:
    library = tmp_path / "library"
    away = _photo(library / "a.png")
    register_folder(store, library)
    away.unlink()
    detect_faces(store, StubDetector())
    (item_id,) = store.pending_media_item_ids()

    recent = utcnow() - timedelta(hours=1)
    assert store.pending_media_item_ids(unreadable_before=recent) == []
    assert store.pending_media_item_ids(unreadable_before=utcnow() + timedelta(seconds=5)) == [item_id]


# thumbnail folders that cannot take files ---------------------------------------------------


def mounted_tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A real small or read-only file system at `folder` (tmpfs; mounting needs root, which the
    test machines have): the disk-full and read-only drills write to it as a user's disk."""
    folder.mkdir(parents=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mount.returncode != 0:
        reason = mount.stderr.decode().strip()
        pytest.fail(f"the drill mounts a tmpfs and needs root: {reason}", pytrace=False)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture
def full_folder(tmp_path: Path) -> Iterator[Path]:
    yield from mounted_tmpfs(tmp_path / "small", "size=40k")


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    yield from mounted_tmpfs(tmp_path / "read_only", "ro,size=1m")


def _detected_library(store: FaceStore, folder: Path, photos: int = 4) -> None:
    """Photos of noise (large thumbnails) with two faces each, detected, no thumbnail yet."""
    rng = np.random.default_rng(3)
    folder.mkdir()
    for index in range(photos):
        pixels = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
    register_folder(store, folder)
    for item in store.pending_media_items():
        faces = [DetectedFace(box, 0.99, ((5.0, 5.0),) * 5) for box in ((0, 0, 80, 80), (80, 80, 160, 160))]
        store.save_detection(item.id, faces, "stub", (160, 160))


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _saved_thumbnails(store: FaceStore) -> set[str]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(FacesTable.c.ThumbnailPath).where(FacesTable.c.ThumbnailPath.isnot(None)))
        return {str(path) for (path,) in rows}


def test_a_full_thumbnail_folder_stops_the_step_and_leaves_no_file_without_its_row(
    store: FaceStore, tmp_path: Path, full_folder: Path
) -> None:
    _detected_library(store, tmp_path / "photos")

    with pytest.raises(ThumbnailFolderError) as raised:
        write_thumbnails(store, full_folder, px=112)

    assert str(raised.value).startswith(f"thumbnail folder {full_folder}: No space left on device")
    saved = _saved_thumbnails(store)
    assert _files(full_folder) == saved  # no orphan file, no partial .tmp
    assert len(store.faces_without_thumbnail()) == 8 - len(saved) > 0  # the rest wait


def test_a_read_only_or_uncreatable_thumbnail_folder_is_one_line(
    store: FaceStore, tmp_path: Path, read_only_folder: Path
) -> None:
    _detected_library(store, tmp_path / "photos", photos=2)
    blocked = tmp_path / "a_file"
    blocked.write_text("in the way of the folder")
    cases = ((read_only_folder, "Read-only file system"), (blocked / "thumbs", "Not a directory"))
    for folder, cause in cases:
        with pytest.raises(ThumbnailFolderError, match=f"^thumbnail folder {folder}: {cause}; "):
            write_thumbnails(store, folder, px=112)
        assert len(store.faces_without_thumbnail()) == 4
    assert _files(read_only_folder) == set()


def test_an_unreadable_legacy_thumbnail_is_cut_again_and_the_batch_goes_on(
    store: FaceStore, tmp_path: Path
) -> None:
    _detected_library(store, tmp_path / "photos", photos=2)
    thumbnails = tmp_path / "thumbnails"
    thumbnails.mkdir()
    (first, *_) = store.faces_without_thumbnail()
    with store.engine.begin() as conn:  # the legacy tool named a thumbnail and left it broken
        conn.execute(update(FacesTable).where(FacesTable.c.Id == first.id).values(Name="legacy_0001.jpg"))
    (thumbnails / "legacy_0001.jpg").write_bytes(b"\xff\xd8 broken")

    run = write_thumbnails(store, thumbnails, px=112)

    assert run.faces == 4 and run.errors == [] and store.faces_without_thumbnail() == []
    assert _files(thumbnails) - {"legacy_0001.jpg"} == _saved_thumbnails(store)
