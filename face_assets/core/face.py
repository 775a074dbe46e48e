"""Detection step: every pending media item gets its faces, or its error, in one transaction."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from face_assets.core.batch import IdRange
from face_assets.core.storage.store import FaceStore, saving
from face_assets.core.vision.prefetch import ahead
from face_assets.core.vision.transforms import MediaDecodeError, load_image
from face_assets.core.vision.types import FaceDetector

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILURES = 3


@dataclass
class DetectionRun:
    media_items: int = 0
    faces: int = 0
    without_faces: int = 0
    errors: list[str] = field(default_factory=list)  # bad files: recorded, not retried
    retry_later: list[str] = field(default_factory=list)  # our failures: left pending
    decode_seconds: float = 0.0  # waiting for decoding that did not hide under inference
    detect_seconds: float = 0.0
    write_seconds: float = 0.0

    @property
    def ms_per_item(self) -> float:
        busy = self.decode_seconds + self.detect_seconds + self.write_seconds
        return 1000.0 * busy / max(self.media_items, 1)


def detect_faces(
    store: FaceStore, detector: FaceDetector, limit: int | None = None, id_range: IdRange = None
) -> DetectionRun:
    """Detects faces in pending media items; a bad file is recorded and the rest go on."""
    run = DetectionRun()
    consecutive_failures = 0
    items = store.pending_media_items(limit, id_range)
    for item, decoding in ahead(items, lambda item: load_image(item.path)):
        run.media_items += 1
        started = time.perf_counter()
        try:
            image = decoding.result()
        except MediaDecodeError as error:
            message = str(error)
            logger.error("media item %d: %s", item.id, message)
            with saving(f"media item {item.id} ({item.path})"):
                store.save_extraction_error(item.id, message)
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
                raise
            continue
        consecutive_failures = 0
        detected = time.perf_counter()
        height, width = image.shape[:2]
        with saving(f"media item {item.id} ({item.path})"):
            store.save_detection(item.id, faces, detector.name, (width, height))
        run.decode_seconds += decoded - started
        run.detect_seconds += detected - decoded
        run.write_seconds += time.perf_counter() - detected
        run.faces += len(faces)
        run.without_faces += not faces
    return run
