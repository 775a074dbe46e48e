"""Detection step: every pending media item gets its faces, or its error, in one transaction."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from face_assets.core.batch import IdRange
from face_assets.core.progress import track
from face_assets.core.storage.store import FaceStore, MediaItem, saving
from face_assets.core.thumbnail import cut_thumbnail, remove_files
from face_assets.core.thumbnail_journal import ThumbnailJournal, sweep_abandoned
from face_assets.core.vision.media import open_media
from face_assets.core.vision.prefetch import ahead
from face_assets.core.vision.transforms import MediaDecodeError
from face_assets.core.vision.types import DetectedFace, FaceDetector, RGBImage
from face_assets.core.vision.video import VideoInfo, sample_frames

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILURES = 3


@dataclass(frozen=True)
class VideoSampling:
    """Frames looked at per second of video, and at most how many per video."""

    fps: float = 1.0
    max_frames: int = 3600


@dataclass(frozen=True)
class ThumbnailTarget:
    """Where the detection step writes its faces' thumbnails, and their size."""

    folder: Path
    px: int


@dataclass
class DetectionRun:
    media_items: int = 0
    videos: int = 0
    frames: int = 0  # video frames looked at
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
    video: VideoInfo | None = None
    cut_files: list[tuple[str, float]] | None = None  # a video's, cut frame by frame


def detect_faces(
    store: FaceStore,
    detector: FaceDetector,
    limit: int | None = None,
    id_range: IdRange = None,
    thumbnails: ThumbnailTarget | None = None,
    video: VideoSampling = VideoSampling(),
) -> DetectionRun:
    """Detects faces in pending media items; a bad file is recorded and the rest go on.

    A video is read as a stream of frames sampled by time (`video`), each detected like a
    photo; its faces, with their frames, are saved in one transaction as a photo's are.

    With `thumbnails`, each face's thumbnail is cut from the photo already decoded, in a
    thread beside the detector, and saved with the faces: the photo is not decoded again for
    it. A thumbnail that cannot be written is left to the thumbnail step, which reports why.
    """
    run = DetectionRun()
    consecutive_failures = 0
    held: _Detected | None = None
    journal = ThumbnailJournal(thumbnails.folder) if thumbnails is not None else None
    if thumbnails is not None:
        sweep_abandoned(thumbnails.folder, store.thumbnails_in_use)

    def cut(item: MediaItem, image: RGBImage, faces: list[DetectedFace]) -> list[tuple[str, float]]:
        assert thumbnails is not None and journal is not None
        done: list[tuple[str, float]] = []
        try:
            for face in faces:
                done.append(
                    cut_thumbnail(
                        item.path, image, face.box_xyxy, thumbnails.folder, thumbnails.px, face.frame
                    )
                )
                journal.wrote(item.id, done[-1][0])
        except OSError:
            # A full or read-only folder: this item's faces are saved without thumbnails, so
            # the files already cut for it would have no row.
            remove_files(thumbnails.folder / relpath for relpath, _ in done)
            journal.settled(item.id)
            raise
        return done

    def save(detected: _Detected) -> None:
        # The database writes stay on this thread: beside the detector, SQLAlchemy's Python
        # code contends for the GIL and slowed detection more than the writes cost here.
        started = time.perf_counter()
        item, cut_files = detected.item, detected.cut_files
        if detected.cutting is not None:
            try:
                cut_files = detected.cutting.result()
            except (OSError, ValueError) as error:
                # A full or read-only folder: faces are saved, thumbnails left to their step.
                folder = thumbnails.folder if thumbnails else ""
                run.thumbnail_error = f"thumbnails of media item {item.id} in {folder}: {error}"
                logger.info("%s; the thumbnail step retries them", run.thumbnail_error)
        with saving(f"media item {item.id} ({item.path})"):
            length = (detected.video.duration_s, detected.video.fps) if detected.video else None
            store.save_detection(item.id, detected.faces, detector.name, detected.size, cut_files, length)
        if journal is not None:
            journal.settled(item.id)
        run.write_seconds += time.perf_counter() - started
        run.faces += len(detected.faces)
        run.thumbnails += len(cut_files or ())
        run.without_faces += not detected.faces

    items = store.pending_media_items(limit, id_range)
    with (
        _closing(journal, store),  # last out: after the cutter's work is done
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="thumbnails") as cutter,
        track("detect", len(items), "media items") as advance,
    ):
        for item, decoding in ahead(items, lambda item: open_media(item.path)):
            run.media_items += 1
            advance(1)
            started = time.perf_counter()
            try:
                media = decoding.result()
                if isinstance(media, VideoInfo):
                    if held is not None:
                        save(held)  # items are saved in their order
                        held = None
                    detected = _detect_video(item, media, detector, video, thumbnails, run, journal)
                    if detected is None:
                        consecutive_failures += 1
                        if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                            raise RuntimeError(f"detection failed on {consecutive_failures} items in a row")
                        continue
                    consecutive_failures = 0
                    save(detected)
                    continue
                image = media
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
                cutting = cutter.submit(cut, item, image, faces)
            # The previous item is saved while this one's thumbnails are cut.
            if held is not None:
                save(held)
            held = _Detected(item, faces, (width, height), cutting)
        if held is not None:
            save(held)
    return run


@contextmanager
def _closing(journal: ThumbnailJournal | None, store: FaceStore) -> Iterator[None]:
    try:
        yield
    finally:
        if journal is not None:
            journal.close(store.thumbnails_in_use)


def _detect_video(
    item: MediaItem,
    info: VideoInfo,
    detector: FaceDetector,
    sampling: VideoSampling,
    thumbnails: ThumbnailTarget | None,
    run: DetectionRun,
    journal: ThumbnailJournal | None,
) -> _Detected | None:
    """A video's faces, frame by frame as the stream is decoded (one frame in memory), their
    thumbnails cut from the frame at once. None when the detector failed (the item stays
    pending); MediaDecodeError when the video cannot be read to its end: then no face of it
    is saved and no thumbnail file of it is left."""
    faces: list[DetectedFace] = []
    cut_files: list[tuple[str, float]] = []
    cutting = thumbnails is not None and run.thumbnail_error is None

    def discard() -> None:
        if thumbnails is not None:
            remove_files(thumbnails.folder / relpath for relpath, _ in cut_files)
        if journal is not None:
            journal.settled(item.id)
        cut_files.clear()

    started = time.perf_counter()
    try:
        for frame in sample_frames(item.path, sampling.fps, sampling.max_frames):
            decoded = time.perf_counter()
            run.decode_seconds += decoded - started
            found = detector.detect(frame.image)
            found = [replace(face, frame=frame.number, time_s=frame.time_s) for face in found]
            run.detect_seconds += time.perf_counter() - decoded
            run.frames += 1
            if cutting and found:
                assert thumbnails is not None
                folder, px = thumbnails.folder, thumbnails.px
                try:
                    for face in found:
                        box = face.box_xyxy
                        cut_files.append(cut_thumbnail(item.path, frame.image, box, folder, px, face.frame))
                        if journal is not None:
                            journal.wrote(item.id, cut_files[-1][0])
                except OSError as error:
                    # A full or read-only folder: the faces are saved, thumbnails left to their step.
                    run.thumbnail_error = f"thumbnails of media item {item.id} in {folder}: {error}"
                    logger.info("%s; the thumbnail step retries them", run.thumbnail_error)
                    discard()
                    cutting = False
            faces.extend(found)
            started = time.perf_counter()
    except MediaDecodeError:
        discard()
        raise
    except Exception as error:  # the detector's failure, not the file's
        logger.exception("media item %d (%s): detection failed", item.id, item.path)
        run.retry_later.append(f"media item {item.id} ({item.path}): detection failed: {error}")
        discard()
        return None
    run.videos += 1
    return _Detected(item, faces, (info.width, info.height), None, info, cut_files if cutting else None)
