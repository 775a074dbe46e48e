"""Detection step: every pending media item gets its faces, or its error, in one transaction."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from face_assets.core.batch import IdRange
from face_assets.core.progress import track
from face_assets.core.settings import DEFAULT_VIDEO_FPS, DEFAULT_VIDEO_MAX_FRAMES
from face_assets.core.storage.store import FaceStore, MediaItem, saving
from face_assets.core.thumbnail import cut_thumbnail, remove_files, thumbnail_relpath
from face_assets.core.thumbnail_journal import ThumbnailJournal, sweep_abandoned
from face_assets.core.vision.media import open_photo_or_video
from face_assets.core.vision.photo import Photo, decode_photo
from face_assets.core.vision.prefetch import ahead
from face_assets.core.vision.transforms import (
    EMBEDDING_MARGIN,
    THUMBNAIL_MARGIN,
    MediaDecodeError,
)
from face_assets.core.vision.types import DetectedFace, FaceDetector, FaceEmbedder
from face_assets.core.vision.video import VideoInfo, sample_frames

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILURES = 3


@dataclass(frozen=True)
class VideoSampling:
    """Frames looked at per second of video, and at most how many per video."""

    fps: float = DEFAULT_VIDEO_FPS
    max_frames: int = DEFAULT_VIDEO_MAX_FRAMES


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
    embedded: int = 0  # embedded from the same decode; the embedding step does the rest
    full_decodes: int = 0  # photos decoded again in full for faces too small at the reduced size
    errors: list[str] = field(default_factory=list)  # bad files: recorded, not retried
    unreadable: list[str] = field(default_factory=list)  # missing or unreadable now: retried
    retry_later: list[str] = field(default_factory=list)  # our failures: left pending
    thumbnail_error: str | None = None  # why thumbnails were left to the thumbnail step
    embedding_error: str | None = None  # why embeddings were left to the embedding step
    decode_seconds: float = 0.0  # waiting for decoding that did not hide under inference
    detect_seconds: float = 0.0
    embed_seconds: float = 0.0
    write_seconds: float = 0.0

    @property
    def ms_per_item(self) -> float:
        busy = self.decode_seconds + self.detect_seconds + self.embed_seconds + self.write_seconds
        return 1000.0 * busy / max(self.media_items, 1)


@dataclass
class _Cut:
    """What one decode of a photo gave besides its faces: thumbnail files and embedding crops."""

    files: list[tuple[str, float]] | None = None
    crops: list[NDArray[np.float32]] = field(default_factory=list)
    thumbnail_error: OSError | None = None
    full_decode: bool = False


@dataclass
class _Detected:
    """An item detected and not yet saved: saved once its thumbnails are cut and its faces
    embedded."""

    item: MediaItem
    faces: list[DetectedFace]
    size: tuple[int, int]
    cutting: Future[_Cut] | None
    video: VideoInfo | None = None
    cut_files: list[tuple[str, float]] | None = None
    crops: list[NDArray[np.float32]] = field(default_factory=list)
    vectors: NDArray[np.float32] | None = None


# A face's crops may be enlarged up to twice from a reduced decode: FaceNet's embedding of a face
# of 60-80 px in a phone photo's half-size decode has cosine 0.996-0.998 with the full decode's
# (at least 0.998 from 100 px), far from any threshold; a smaller face is cut from the full photo.
MAX_ENLARGEMENT = 2.0

# A batch of embeddings is made once this many faces or items wait: the items wait as crops
# (300 KB a face), never as decoded photos.
MAX_ITEMS_WAITING = 16


def detect_faces(
    store: FaceStore,
    detector: FaceDetector,
    limit: int | None = None,
    id_range: IdRange = None,
    thumbnails: ThumbnailTarget | None = None,
    video: VideoSampling = VideoSampling(),
    embedder: FaceEmbedder | None = None,
) -> DetectionRun:
    """Detects faces in pending media items; a bad file is recorded and the rest go on.

    A photo is decoded once, at the smallest size the detector needs (a phone's JPEG at half
    or a quarter of its size). With `thumbnails`, each face's thumbnail is cut from that
    decode, in a thread beside the detector; with `embedder`, each face's embedding crop too,
    and the faces are embedded in batches across items. A face too small at the reduced size
    for its crops is cut from the photo decoded in full, once per photo and only then. The
    faces, thumbnails and embeddings of an item are saved in one transaction. A thumbnail that
    cannot be written is left to the thumbnail step, an embedding that cannot be made to the
    embedding step, each of which reports why.

    A video is read as a stream of frames sampled by time (`video`), each detected like a
    photo; its faces, with their frames, are saved in one transaction as a photo's are.
    """
    run = DetectionRun()
    consecutive_failures = 0
    waiting: list[_Detected] = []
    journal = ThumbnailJournal(thumbnails.folder) if thumbnails is not None else None
    if thumbnails is not None:
        sweep_abandoned(thumbnails.folder, store.thumbnails_in_use)
    from face_assets.core.tuning.model import TunedEmbedder

    if embedder is not None and store.other_embedding_model(embedder.name) is not None:
        embedder = None  # another model's library: the faces wait, the embedding step says why
    if isinstance(embedder, TunedEmbedder):
        embedder = None  # a tuned model's faces keep their base embeddings: the embedding step's
    crop_px = embedder.input_px if embedder is not None else 0
    batch_faces = getattr(embedder, "batch_size", 32)
    # The face size, in decoded pixels, below which a crop from a reduced decode would be
    # enlarged more than MAX_ENLARGEMENT times: then the photo is decoded in full for it.
    thumbnail_px = thumbnails.px if thumbnails is not None else 0
    smallest_face = (
        max(thumbnail_px / (1 + 2 * THUMBNAIL_MARGIN), crop_px / (1 + 2 * EMBEDDING_MARGIN)) / MAX_ENLARGEMENT
    )

    def cut(item: MediaItem, photo: Photo, faces: list[DetectedFace], with_thumbnails: bool) -> _Cut:
        out = _Cut()
        sources = _crop_sources(item, photo, faces, smallest_face)
        out.full_decode = any(source is not photo for source, _ in sources)
        if embedder is not None:
            out.crops = [
                embedder.cut(source.pixels, seen.box_xyxy, seen.landmarks) for source, seen in sources
            ]
        if not with_thumbnails:
            return out
        assert thumbnails is not None and journal is not None
        done: list[tuple[str, float]] = []
        try:
            for face, (source, seen) in zip(faces, sources, strict=True):
                journal.wrote(item.id, thumbnail_relpath(item.path, face.box_xyxy, thumbnails.px, face.frame))
                done.append(
                    cut_thumbnail(item.path, source.pixels, face.box_xyxy, thumbnails.folder, thumbnails.px,
                                  face.frame, crop_box=seen.box_xyxy)
                )  # fmt: skip
        except OSError as error:
            # A full or read-only folder: this item's faces are saved without thumbnails, so
            # the files already cut for it would have no row.
            remove_files(thumbnails.folder / relpath for relpath, _ in done)
            journal.settled(item.id)
            out.thumbnail_error = error
            return out
        out.files = done
        return out

    def embed(crops: list[NDArray[np.float32]]) -> NDArray[np.float32] | None:
        """The crops' embeddings, or None once the embedder has failed (then the embedding
        step makes them, and says why if it fails too)."""
        if embedder is None or run.embedding_error is not None or not crops:
            return None
        started = time.perf_counter()
        try:
            vectors = embedder.embed(np.stack(crops))
        except Exception as error:  # the model's failure, not a file's: the faces are still saved
            logger.exception("embedding at detection failed")
            run.embedding_error = f"embeddings at detection: {error}"
            return None
        run.embed_seconds += time.perf_counter() - started
        run.embedded += len(crops)
        return vectors

    def collect(detected: _Detected) -> None:
        if detected.cutting is None:
            return
        done = detected.cutting.result()
        detected.cutting = None
        detected.crops = done.crops
        detected.cut_files = done.files
        run.full_decodes += done.full_decode
        if done.thumbnail_error is not None and run.thumbnail_error is None:
            folder = thumbnails.folder if thumbnails else ""
            item_id = detected.item.id
            run.thumbnail_error = f"thumbnails of media item {item_id} in {folder}: {done.thumbnail_error}"
            logger.info("%s; the thumbnail step retries them", run.thumbnail_error)

    def save(detected: _Detected) -> None:
        # The database writes stay on this thread: beside the detector, SQLAlchemy's Python
        # code contends for the GIL and slowed detection more than the writes cost here.
        started = time.perf_counter()
        item = detected.item
        embedded = None
        if detected.vectors is not None and embedder is not None:
            embedded = (detected.vectors, embedder.name)
        with saving(f"media item {item.id} ({item.path})"):
            length = (detected.video.duration_s, detected.video.fps) if detected.video else None
            store.save_detection(
                item.id, detected.faces, detector.name, detected.size, detected.cut_files, length, embedded
            )
        if journal is not None:
            journal.settled(item.id)
        run.write_seconds += time.perf_counter() - started
        run.faces += len(detected.faces)
        run.thumbnails += len(detected.cut_files or ())
        run.without_faces += not detected.faces

    def settle(count: int | None = None) -> None:
        """The first `count` waiting items (all by default): their faces embedded in one batch,
        then each saved, in their order."""
        batch = waiting[:count] if count is not None else list(waiting)
        del waiting[: len(batch)]
        for detected in batch:
            collect(detected)
        vectors = embed([crop for detected in batch for crop in detected.crops])
        offset = 0
        for detected in batch:
            if vectors is not None:
                detected.vectors = vectors[offset : offset + len(detected.crops)]
            offset += len(detected.crops)
            detected.crops = []
            save(detected)

    def decode(item: MediaItem) -> Photo | VideoInfo:
        return open_photo_or_video(item.path, getattr(detector, "max_side_px", None))

    items = store.pending_media_items(limit, id_range)
    with (
        _closing(journal, store),  # last out: after the cutter's work is done
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="thumbnails") as cutter,
        track("detect", len(items), "media items") as advance,
    ):
        # Two ahead hide a decode under the detector; more would only hold more large photos
        # (a HEIC of 48 MP has no reduced decode: 140 MB each).
        for item, decoding in ahead(items, decode, lookahead=2):
            run.media_items += 1
            advance(1)
            started = time.perf_counter()
            try:
                media = decoding.result()
                if isinstance(media, VideoInfo):
                    settle()  # items are saved in their order
                    detected = _detect_video(
                        item, media, detector, video, thumbnails, run, journal, embed, embedder, batch_faces
                    )
                    if detected is None:
                        consecutive_failures += 1
                        if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                            raise RuntimeError(f"detection failed on {consecutive_failures} items in a row")
                        continue
                    consecutive_failures = 0
                    save(detected)
                    continue
                photo = media
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
                faces = [_in_full_pixels(face, photo) for face in detector.detect(photo.pixels)]
            except Exception as error:  # one item must not stop the others
                # Not a bad file but a failure of ours: the item stays pending and is retried,
                # unless failures repeat, which means something is wrong beyond one item.
                logger.exception("media item %d (%s): detection failed", item.id, item.path)
                run.retry_later.append(f"media item {item.id} ({item.path}): detection failed: {error}")
                consecutive_failures += 1
                if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                    settle()  # found before the failures: kept
                    raise
                continue
            consecutive_failures = 0
            run.decode_seconds += decoded - started
            run.detect_seconds += time.perf_counter() - decoded
            with_thumbnails = thumbnails is not None and run.thumbnail_error is None
            cutting = None
            if faces and (with_thumbnails or (embedder is not None and run.embedding_error is None)):
                cutting = cutter.submit(cut, item, photo, faces, with_thumbnails)
            waiting.append(_Detected(item, faces, (photo.full_width, photo.full_height), cutting))
            # The newest item's crops are cut while the earlier ones are embedded and saved.
            earlier = waiting[:-1]
            if len(earlier) >= MAX_ITEMS_WAITING or sum(len(d.faces) for d in earlier) >= batch_faces:
                settle(len(earlier))
        settle()
    return run


def _in_full_pixels(face: DetectedFace, photo: Photo) -> DetectedFace:
    """A face found in a reduced decode, in the full photo's pixels (the stored coordinates)."""
    if not photo.reduced:
        return face
    sx, sy = photo.full_width / photo.pixels.shape[1], photo.full_height / photo.pixels.shape[0]
    x1, y1, x2, y2 = face.box_xyxy
    box = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
    return replace(face, box_xyxy=box, landmarks=tuple((x * sx, y * sy) for x, y in face.landmarks))


def _crop_sources(
    item: MediaItem, photo: Photo, faces: list[DetectedFace], smallest_face: float
) -> list[tuple[Photo, DetectedFace]]:
    """For each face, the decode its crops come from and the face in that decode's pixels: the
    reduced decode when the face is large enough there, else the full photo, decoded once."""
    full: Photo | None = None
    out = []
    for face in faces:
        source = photo
        if photo.reduced and max(face.width, face.height) * photo.scale < smallest_face:
            if full is None:
                try:
                    full = decode_photo(item.path)
                except MediaDecodeError as error:
                    # Read once, not twice (a file changing under us): the reduced pixels serve.
                    logger.warning("%s; its small faces are cut from the reduced decode", error)
                    full = photo
            source = full
        sx, sy = source.pixels.shape[1] / source.full_width, source.pixels.shape[0] / source.full_height
        x1, y1, x2, y2 = face.box_xyxy
        seen = replace(
            face,
            box_xyxy=(x1 * sx, y1 * sy, x2 * sx, y2 * sy),
            landmarks=tuple((x * sx, y * sy) for x, y in face.landmarks),
        )
        out.append((source, seen))
    return out


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
    embed: Callable[[list[NDArray[np.float32]]], NDArray[np.float32] | None],
    embedder: FaceEmbedder | None,
    batch_faces: int,
) -> _Detected | None:
    """A video's faces, frame by frame as the stream is decoded (one frame in memory), their
    thumbnails and embedding crops cut from the frame at once, embedded a batch at a time.
    None when the detector failed (the item stays pending); MediaDecodeError when the video
    cannot be read to its end: then no face of it is saved and no thumbnail file of it is left."""
    faces: list[DetectedFace] = []
    cut_files: list[tuple[str, float]] = []
    cutting = thumbnails is not None and run.thumbnail_error is None
    crops: list[NDArray[np.float32]] = []
    vectors: list[NDArray[np.float32]] = []

    def embed_waiting() -> None:
        nonlocal crops
        made = embed(crops)
        if made is not None:
            vectors.append(made)
        crops = []

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
                        if journal is not None:
                            journal.wrote(item.id, thumbnail_relpath(item.path, box, px, face.frame))
                        cut_files.append(cut_thumbnail(item.path, frame.image, box, folder, px, face.frame))
                except OSError as error:
                    # A full or read-only folder: the faces are saved, thumbnails left to their step.
                    run.thumbnail_error = f"thumbnails of media item {item.id} in {folder}: {error}"
                    logger.info("%s; the thumbnail step retries them", run.thumbnail_error)
                    discard()
                    cutting = False
            if embedder is not None:
                crops.extend(embedder.cut(frame.image, face.box_xyxy, face.landmarks) for face in found)
                if len(crops) >= batch_faces:
                    embed_waiting()
            faces.extend(found)
            started = time.perf_counter()
        embed_waiting()
    except MediaDecodeError:
        discard()
        raise
    except Exception as error:  # the detector's failure, not the file's
        logger.exception("media item %d (%s): detection failed", item.id, item.path)
        run.retry_later.append(f"media item {item.id} ({item.path}): detection failed: {error}")
        discard()
        return None
    run.videos += 1
    detected = _Detected(item, faces, (info.width, info.height), None, info, cut_files if cutting else None)
    # Every face embedded, or none: a failure of the embedder leaves the video's faces to the
    # embedding step.
    if embedder is not None and run.embedding_error is None and sum(map(len, vectors)) == len(faces):
        made = np.concatenate(vectors) if vectors else np.empty((0, embedder.dim), np.float32)
        detected.vectors = made
    return detected
