"""Thumbnail step: a square crop per face, named so that names never collide or drift."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import numpy as np
from PIL import Image

from face_assets.core.batch import IdRange
from face_assets.core.storage.store import FaceRecord, FaceStore, path_key, saving
from face_assets.core.vision.prefetch import ahead
from face_assets.core.vision.transforms import MediaDecodeError, load_image, sharpness, square_thumbnail
from face_assets.core.vision.types import RGBImage

logger = logging.getLogger(__name__)


@dataclass
class ThumbnailRun:
    faces: int = 0
    media_items: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def thumbnail_relpath(media_path: Path, box_xyxy: Sequence[float], px: int) -> str:
    """`ab/ab12...ef_112.jpg`: from the file's identity and the box, the same on every rebuild,
    distinct for two files of the same name in different folders."""
    identity = f"{path_key(media_path)}|{json.dumps([round(v, 1) for v in box_xyxy])}"
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:20]
    return f"{digest[:2]}/{digest}_{px}.jpg"


def save_jpeg(pixels: RGBImage, target: Path) -> None:
    """Written beside the target, then renamed: a crash never leaves half a thumbnail."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    Image.fromarray(pixels).save(partial, format="JPEG", quality=90)
    partial.replace(target)


def faces_by_media_item(faces: Sequence[FaceRecord]) -> Iterator[tuple[Path, list[FaceRecord]]]:
    """Faces arrive ordered by media item; each image is then decoded once for all its faces."""
    for _, group in groupby(faces, key=lambda face: face.media_item_id):
        members = list(group)
        yield members[0].path, members


def cut_thumbnail(
    path: Path, image: RGBImage, box_xyxy: tuple[float, float, float, float], folder: Path, px: int
) -> tuple[str, float]:
    """One face's thumbnail file, written from its decoded photo: (path relative to the
    folder, sharpness)."""
    relpath = thumbnail_relpath(path, box_xyxy, px)
    pixels = square_thumbnail(image, box_xyxy, px)
    save_jpeg(pixels, folder / relpath)
    return relpath, sharpness(pixels)


def _crop_thumbnails(
    path: Path, faces: list[FaceRecord], folder: Path, px: int
) -> tuple[list[tuple[int, str, str]], list[float]]:
    """The thumbnail rows and sharpness of one media item's faces, files written."""
    # The legacy tools' thumbnails of these faces, in the same folder, are adopted as they
    # are; the photo is decoded only when some face still needs one.
    legacy = {f.id: folder / f.name for f in faces if f.name and (folder / f.name).is_file()}
    image = load_image(path) if len(legacy) < len(faces) else None
    rows, sharp = [], []
    for face in faces:
        if face.id in legacy:
            relpath = face.name or ""
            with Image.open(legacy[face.id]) as thumbnail:
                pixels = np.asarray(thumbnail.convert("RGB"))
            sharp.append(sharpness(pixels))
        else:
            assert image is not None
            relpath, value = cut_thumbnail(path, image, face.box_xyxy, folder, px)
            sharp.append(value)
        rows.append((face.id, Path(relpath).name, relpath))
    return rows, sharp


def write_thumbnails(store: FaceStore, folder: Path, px: int = 112, id_range: IdRange = None) -> ThumbnailRun:
    run = ThumbnailRun()
    started = time.perf_counter()
    # Files are cropped and written ahead while earlier items' rows are saved; no model runs
    # in this step, so the cropping takes every core.
    groups = faces_by_media_item(store.faces_without_thumbnail(id_range))

    def crop(group: tuple[Path, list[FaceRecord]]) -> tuple[list[tuple[int, str, str]], list[float]]:
        return _crop_thumbnails(group[0], group[1], folder, px)

    for (_, faces), cropping in ahead(groups, crop, lookahead=8, workers=os.cpu_count() or 1):
        try:
            rows, sharp = cropping.result()
        except MediaDecodeError as error:
            logger.error("thumbnails of media item %d: %s", faces[0].media_item_id, error)
            run.errors.append(f"media item {faces[0].media_item_id}: {error}")
            continue
        with saving(f"thumbnails of media item {faces[0].media_item_id}"):
            store.save_thumbnails(rows, sharp)
        run.faces += len(rows)
        run.media_items += 1
    run.seconds = time.perf_counter() - started
    return run
