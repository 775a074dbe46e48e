"""Detection step: every pending media item gets its faces, or its error, in one transaction."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from face_assets.core.batch import IdRange
from face_assets.core.progress import track
from face_assets.core.storage.store import FaceStore, MediaItem, saving
from face_assets.core.thumbnail import cut_thumbnail, remove_files
from face_assets.core.vision.prefetch import ahead
from face_assets.core.vision.transforms import MediaDecodeError, load_image
from face_assets.core.vision.types import DetectedFace, FaceDetector, RGBImage

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILURES = 3


@dataclass(frozen=True)
class ThumbnailTarget:
    """Where the detection step writes its faces' thumbnails, and their size."""

    folder: Path
    px: int


@dataclass
class DetectionRun:
    media_items: int = 0
    faces: int = 0
    without_faces: int = 0
    thumbnails: int = 0  # written with their faces; the thumbnail step does the rest
    errors: list[str] = field(default_factory=list)  # bad files: recorded, not retried
    unreadable: list[str] = field(default_factory=list)  # missing or unreadable now: retried
    retry_later: list[str] = field(default_factory=list)  # our failures: left pending
    thumbnail_error: str | None = None  # why thumbnails were left to the thumbnail step
    decode_seconds: float = 0.0  # waiting for decoding that did not hide under inference
    detect_seconds: float = 0.0
    write_seconds: float = 0.0

    @property
    def ms_per_item(self) -> float:
        busy = self.decode_seconds + self.detect_seconds + self.write_seconds
        return 1000.0 * busy / max(self.media_items, 1)


@dataclass
class _Detected:
    """An item detected and not yet saved: saved once its thumbnails are cut."""

    item: MediaItem
    faces: list[DetectedFace]
    size: tuple[int, int]
    cutting: Future[list[tuple[str, float]]] | None


def detect_faces(
    store: FaceStore,
    detector: FaceDetector,
    limit: int | None = None,
    id_range: IdRange = None,
    thumbnails: ThumbnailTarget | None = None,
) -> DetectionRun:
    """Detects faces in pending media items; a bad file is recorded and the rest go on.

    With `thumbnails`, each face's thumbnail is cut from the photo already decoded, in a
    thread beside the detector, and saved with the faces: the photo is not decoded again for
    it. A thumbnail that cannot be written is left to the thumbnail step, which reports why.
    """
    run = DetectionRun()
    consecutive_failures = 0
    held: _Detected | None = None

    def cut(path: Path, image: RGBImage, faces: list[DetectedFace]) -> list[tuple[str, float]]:
        assert thumbnails is not None
        done: list[tuple[str, float]] = []
        try:
            for face in faces:
                done.append(cut_thumbnail(path, image, face.box_xyxy, thumbnails.folder, thumbnails.px))
        except OSError:
            # A full or read-only folder: this item's faces are saved without thumbnails, so
            # the files already cut for it would have no row.
            remove_files(thumbnails.folder / relpath for relpath, _ in done)
            raise
        return done

    def save(detected: _Detected) -> None:
        # The database writes stay on this thread: beside the detector, SQLAlchemy's Python
        # code contends for the GIL and slowed detection more than the writes cost here.
        started = time.perf_counter()
        item, cut_files = detected.item, None
        if detected.cutting is not None:
            try:
                cut_files = detected.cutting.result()
            except (OSError, ValueError) as error:
                # A full or read-only folder: faces are saved, thumbnails left to their step.
                folder = thumbnails.folder if thumbnails else ""
                run.thumbnail_error = f"thumbnails of media item {item.id} in {folder}: {error}"
                logger.info("%s; the thumbnail step retries them", run.thumbnail_error)
        with saving(f"media item {item.id} ({item.path})"):
            store.save_detection(item.id, detected.faces, detector.name, detected.size, cut_files)
        run.write_seconds += time.perf_counter() - started
        run.faces += len(detected.faces)
        run.thumbnails += len(cut_files or ())
        run.without_faces += not detected.faces

    items = store.pending_media_items(limit, id_range)
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="thumbnails") as cutter,
        track("detect", len(items), "media items") as advance,
    ):
        for item, decoding in ahead(items, lambda item: load_image(item.path)):
            run.media_items += 1
            advance(1)
            started = time.perf_counter()
            try:
                image = decoding.result()
            except MediaDecodeError as error:
                message = str(error)
                with saving(f"media item {item.id} ({item.path})"):
                    if error.transient:
                        store.save_read_failure(item.id, message)
                    else:
                        store.save_extraction_error(item.id, message)
                if error.transient:
                    logger.info("media item %d: %s; retried on the next run", item.id, message)
                    run.unreadable.append(f"media item {item.id}: {message}")
                else:
                    logger.info("media item %d: %s", item.id, message)  # in the run summary
                    run.errors.append(f"media item {item.id}: {message}")
                continue
            decoded = time.perf_counter()
            try:
                faces = detector.detect(image)
            except Exception as error:  # one item must not stop the others
                # Not a bad file but a failure of ours: the item stays pending and is retried,
                # unless failures repeat, which means something is wrong beyond one item.
                logger.exception("media item %d (%s): detection failed", item.id, item.path)
                run.retry_later.append(f"media item {item.id} ({item.path}): detection failed: {error}")
                consecutive_failures += 1
                if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                    if held is not None:
                        save(held)  # found before the failures: kept
                    raise
                continue
            consecutive_failures = 0
            run.decode_seconds += decoded - started
            run.detect_seconds += time.perf_counter() - decoded
            height, width = image.shape[:2]
            cutting = None
            if thumbnails is not None and faces and run.thumbnail_error is None:
                cutting = cutter.submit(cut, item.path, image, faces)
            # The previous item is saved while this one's thumbnails are cut.
            if held is not None:
                save(held)
            held = _Detected(item, faces, (width, height), cutting)
        if held is not None:
            save(held)
    return run
