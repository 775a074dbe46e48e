"""Embedding step: each image decoded once, its faces embedded in batches across images; a
video's frames with faces decoded again as a stream."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from face_assets.core.batch import IdRange
from face_assets.core.errors import UserError
from face_assets.core.progress import track
from face_assets.core.storage.store import FaceRecord, FaceStore, saving
from face_assets.core.thumbnail import faces_by_media_item, frames_of_faces
from face_assets.core.track import TrackParams, face_tracks
from face_assets.core.vision.media import open_media
from face_assets.core.vision.prefetch import ahead
from face_assets.core.vision.transforms import MediaDecodeError, embedding_crop
from face_assets.core.vision.types import FaceEmbedder
from face_assets.core.vision.video import VideoInfo

logger = logging.getLogger(__name__)


class MixedModels(UserError):
    """The library's faces are embedded by another model than the embedder's."""


def require_library_model(store: FaceStore, embedder: FaceEmbedder) -> None:
    """MixedModels in one line when some face's embedding comes from another model: the
    embeddings of two models are never compared, in matching or in clustering."""
    other = store.other_embedding_model(embedder.name)
    if other is not None:
        raise MixedModels(
            f"the library's faces are embedded by {other}, FACE_ASSETS_EMBEDDER is {embedder.name}: the "
            f"embeddings of two models are never mixed, and moving a library to another model is not "
            f"built yet; set FACE_ASSETS_EMBEDDER back to the model of the library"
        )


@dataclass
class EmbeddingRun:
    faces: int = 0
    media_items: int = 0
    errors: list[str] = field(default_factory=list)
    decode_seconds: float = 0.0  # waiting for decoding that did not hide under inference
    embed_seconds: float = 0.0
    write_seconds: float = 0.0
    tracks: int = 0  # face tracks made in videos

    @property
    def ms_per_face(self) -> float:
        return 1000.0 * self.embed_seconds / max(self.faces, 1)


def embed_faces(
    store: FaceStore, embedder: FaceEmbedder, batch_faces: int = 64, id_range: IdRange = None
) -> EmbeddingRun:
    require_library_model(store, embedder)
    run = EmbeddingRun()
    pending_ids: list[int] = []
    pending_crops: list[np.ndarray] = []

    def flush() -> None:
        if not pending_ids:
            return
        started = time.perf_counter()
        vectors = embedder.embed(np.stack(pending_crops))
        embedded = time.perf_counter()
        with saving(f"embeddings of {len(pending_ids)} faces"):
            store.save_embeddings(pending_ids, vectors, embedder.name)
        run.embed_seconds += embedded - started
        run.write_seconds += time.perf_counter() - embedded
        run.faces += len(pending_ids)
        pending_ids.clear()
        pending_crops.clear()

    def crops_of(group: tuple[Path, list[FaceRecord]]) -> list[np.ndarray] | None:
        media = open_media(group[0])
        if isinstance(media, VideoInfo):
            return None  # a video: its frames are read below as a stream, never all at once
        return [embedding_crop(media, f.box_xyxy, embedder.input_px) for f in group[1]]

    def stream_video(path: Path, faces: list[FaceRecord]) -> None:
        """A video's faces in batches as its frames are decoded: memory stays one batch's."""
        kept = len(pending_ids)
        try:
            for image, members in frames_of_faces(path, faces):
                pending_ids.extend(f.id for f in members)
                pending_crops.extend(embedding_crop(image, f.box_xyxy, embedder.input_px) for f in members)
                if len(pending_ids) >= batch_faces:
                    flush()
                    kept = 0
        except (MediaDecodeError, ValueError):
            del pending_ids[kept:], pending_crops[kept:]  # this video's faces not yet written wait
            raise

    waiting = store.faces_without_embedding(id_range)
    with track("embed", len(waiting), "faces") as advance:
        for (_, faces), cropping in ahead(faces_by_media_item(waiting), crops_of):
            advance(len(faces))
            started = time.perf_counter()
            try:
                crops = cropping.result()
                if crops is None:
                    stream_video(faces[0].path, faces)
                    run.media_items += 1
                    continue
            except (MediaDecodeError, ValueError) as error:
                logger.error("embeddings of media item %d: %s", faces[0].media_item_id, error)
                run.errors.append(f"media item {faces[0].media_item_id}: {error}")
                continue
            run.decode_seconds += time.perf_counter() - started
            run.media_items += 1
            # Faces of one media item stay in one batch, so one write covers the whole item.
            pending_ids.extend(f.id for f in faces)
            pending_crops.extend(crops)
            if len(pending_ids) >= batch_faces:
                flush()
    flush()
    run.tracks = assign_tracks(store, id_range)
    return run


def assign_tracks(store: FaceStore, id_range: IdRange = None, params: TrackParams | None = None) -> int:
    """Follows each fully embedded video's faces across its frames; returns the tracks made."""
    made = 0
    for video in store.videos_to_track(id_range):
        labels = face_tracks(video.times, video.boxes, video.vectors, params)
        # A track is named by its first face, so ids are unique across the library.
        first = {
            int(label): int(video.face_ids[np.flatnonzero(labels == label)[0]]) for label in np.unique(labels)
        }
        with saving(f"tracks of media item {video.media_item_id}"):
            store.save_tracks(video.face_ids.tolist(), [first[int(label)] for label in labels])
        made += len(first)
    return made
