"""Thumbnail step: a square crop per face, named so that names never collide or drift."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path

import numpy as np
from PIL import Image

from face_assets.core.batch import IdRange
from face_assets.core.errors import UserError
from face_assets.core.files import partial_file
from face_assets.core.storage.store import FaceRecord, FaceStore, path_key, saving
from face_assets.core.vision.media import open_media
from face_assets.core.vision.prefetch import ahead
from face_assets.core.vision.transforms import (
    MediaDecodeError,
    sharpness,
    square_thumbnail,
    thumbnail_sharpness,
)
from face_assets.core.vision.types import RGBImage
from face_assets.core.vision.video import VideoInfo, sample_frames

logger = logging.getLogger(__name__)


@dataclass
class ThumbnailRun:
    faces: int = 0
    media_items: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def thumbnail_relpath(media_path: Path, box_xyxy: Sequence[float], px: int, frame: int | None = None) -> str:
    """`ab/ab12...ef_112.jpg`: from the file's identity, the video frame and the box, the same
    on every rebuild, distinct for two files of the same name in different folders and for the
    same box in two frames of a video."""
    identity = f"{path_key(media_path)}|{json.dumps([round(v, 1) for v in box_xyxy])}"
    if frame is not None:
        identity += f"|frame {frame}"
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:20]
    return f"{digest[:2]}/{digest}_{px}.jpg"


class ThumbnailFolderError(UserError, OSError):
    """The thumbnail folder cannot take files (read-only, full, not creatable): no thumbnail can
    be written until the user fixes it, so the step stops and the faces wait."""


def folder_error(folder: Path, error: OSError) -> ThumbnailFolderError:
    cause = error.strerror or str(error)
    return ThumbnailFolderError(
        f"thumbnail folder {folder}: {cause}; the faces wait for their thumbnails: fix the folder "
        "or set THUMBNAIL_SAVE_PATH, then rerun"
    )


def save_jpeg(pixels: RGBImage, target: Path) -> None:
    """Written beside the target, then renamed: a crash never leaves half a thumbnail, and a
    failed write (disk full) leaves no partial file."""
    with partial_file(target) as partial:
        Image.fromarray(pixels).save(partial, format="JPEG", quality=90)
        partial.replace(target)


def remove_files(paths: Iterable[Path]) -> None:
    """Thumbnail files written for rows that were never saved: none is left without its row."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            logger.warning("could not remove %s: %s", path, error)


def faces_by_media_item(faces: Sequence[FaceRecord]) -> Iterator[tuple[Path, list[FaceRecord]]]:
    """Faces arrive ordered by media item; each image is then decoded once for all its faces."""
    for _, group in groupby(faces, key=lambda face: face.media_item_id):
        members = list(group)
        yield members[0].path, members


def frames_of_faces(path: Path, faces: Sequence[FaceRecord]) -> Iterator[tuple[RGBImage, list[FaceRecord]]]:
    """The frames of a video its faces are in, one at a time as the stream is decoded, each with
    its faces; MediaDecodeError names a face whose frame is missing."""
    by_frame: dict[int, list[FaceRecord]] = {}
    for face in faces:
        if face.frame is None:
            raise MediaDecodeError(f"{path}: face {face.id} of this video has no frame number")
        by_frame.setdefault(face.frame, []).append(face)
    for frame in sample_frames(path, 1.0, 0, wanted=set(by_frame)):
        yield frame.image, by_frame.pop(frame.number)
    if by_frame:
        first = min(by_frame)
        raise MediaDecodeError(f"{path}: the video has no frame {first} (face {by_frame[first][0].id})")


def images_of_faces(path: Path, faces: Sequence[FaceRecord]) -> Iterator[tuple[RGBImage, list[FaceRecord]]]:
    """A photo with its faces, or a video's frames with theirs: what a later step crops from.
    A photo's faces come with no frame (a legacy tool may have stored frame 0 for photos)."""
    media = open_media(path)
    if isinstance(media, VideoInfo):
        yield from frames_of_faces(path, faces)
    else:
        yield media, [replace(face, frame=None) if face.frame is not None else face for face in faces]


def cut_thumbnail(
    path: Path,
    image: RGBImage,
    box_xyxy: tuple[float, float, float, float],
    folder: Path,
    px: int,
    frame: int | None = None,
    crop_box: tuple[float, float, float, float] | None = None,
) -> tuple[str, float]:
    """One face's thumbnail file, written from its decoded photo or video frame: (path
    relative to the folder, sharpness). The file is named by the face's box; `crop_box` is the
    same box in `image`'s pixels when the photo was decoded at a reduced size."""
    relpath = thumbnail_relpath(path, box_xyxy, px, frame)
    pixels = square_thumbnail(image, crop_box or box_xyxy, px)
    save_jpeg(pixels, folder / relpath)
    return relpath, thumbnail_sharpness(image, pixels, crop_box or box_xyxy)


def _legacy_pixels(path: Path) -> RGBImage | None:
    """A legacy tool's thumbnail, or None when it cannot be read (then a new one is cut)."""
    try:
        with Image.open(path) as thumbnail:
            return np.asarray(thumbnail.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        logger.warning("legacy thumbnail %s cannot be read (%s): cutting a new one", path, error)
        return None


def _crop_thumbnails(
    path: Path, faces: list[FaceRecord], folder: Path, px: int, written: list[Path]
) -> tuple[list[tuple[int, str, str]], list[float]]:
    """The thumbnail rows and sharpness of one media item's faces, files written (each added to
    `written` as soon as it exists)."""
    # The legacy tools' thumbnails of these faces, in the same folder, are adopted as they
    # are; the photo is decoded only when some face still needs one.
    legacy = {f.id: folder / f.name for f in faces if f.name and (folder / f.name).is_file()}
    readable = {face_id: _legacy_pixels(file) for face_id, file in legacy.items()}
    adopted = {face_id: pixels for face_id, pixels in readable.items() if pixels is not None}
    cut: dict[int, tuple[str, float]] = {}
    rest = [face for face in faces if face.id not in adopted]
    for image, members in images_of_faces(path, rest) if rest else ():
        for face in members:
            written.append(folder / thumbnail_relpath(path, face.box_xyxy, px, face.frame))
            cut[face.id] = cut_thumbnail(path, image, face.box_xyxy, folder, px, face.frame)
    rows, sharp = [], []
    for face in faces:
        if face.id in adopted:
            relpath = face.name or ""
            sharp.append(sharpness(adopted[face.id]))
        else:
            relpath, value = cut[face.id]
            sharp.append(value)
        rows.append((face.id, Path(relpath).name, relpath))
    return rows, sharp


def write_thumbnails(store: FaceStore, folder: Path, px: int, id_range: IdRange = None) -> ThumbnailRun:
    """Thumbnails of the faces that lack one; a photo that cannot be read is named and skipped,
    a folder that cannot take files stops the step (ThumbnailFolderError) with every face of
    the unsaved items still waiting and none of their files left behind."""
    run = ThumbnailRun()
    started = time.perf_counter()
    # Files are cropped and written ahead while earlier items' rows are saved; no model runs
    # in this step, so the cropping takes every core.
    groups = faces_by_media_item(store.faces_without_thumbnail(id_range))
    unsaved: dict[int, list[Path]] = {}  # files written per media item whose rows are not saved

    def crop(group: tuple[Path, list[FaceRecord]]) -> tuple[list[tuple[int, str, str]], list[float]]:
        written = unsaved.setdefault(group[1][0].media_item_id, [])
        return _crop_thumbnails(group[0], group[1], folder, px, written)

    cropped = ahead(groups, crop, lookahead=8, workers=os.cpu_count() or 1)
    folder_failed = False
    try:
        for (_, faces), cropping in cropped:
            item_id = faces[0].media_item_id
            try:
                rows, sharp = cropping.result()
            except MediaDecodeError as error:
                logger.info("thumbnails of media item %d: %s", item_id, error)
                run.errors.append(f"media item {item_id}: {error}")
                continue
            except OSError as error:
                folder_failed = True
                raise folder_error(folder, error) from error
            with saving(f"thumbnails of media item {item_id}"):
                store.save_thumbnails(rows, sharp)
            unsaved.pop(item_id, None)
            run.faces += len(rows)
            run.media_items += 1
    finally:
        cropped.close()  # waits for the crops in flight, so their files are known below
        if folder_failed:
            # Only then: after a database failure the same names may belong to another run's
            # saved rows (names are deterministic), and a retry rewrites them anyway.
            remove_files(file for files in unsaved.values() for file in files)
    run.seconds = time.perf_counter() - started
    return run
