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
from face_assets.core.storage.codecs import decode_embedding
from face_assets.core.storage.store import FaceRecord, FaceStore, saving
from face_assets.core.thumbnail import faces_by_media_item, frames_of_faces
from face_assets.core.track import TrackParams, face_tracks, track_params_for
from face_assets.core.vision.media import open_media
from face_assets.core.vision.prefetch import ahead
from face_assets.core.vision.transforms import MediaDecodeError
from face_assets.core.vision.types import FaceEmbedder
from face_assets.core.vision.video import VideoInfo

logger = logging.getLogger(__name__)


class MixedModels(UserError):
    """The library's faces are embedded by a model the current one cannot be computed from."""


# Faces moved to another model per transaction: a killed switch keeps what it finished.
SWITCH_BATCH = 1000


def base_of(embedder: FaceEmbedder) -> FaceEmbedder:
    """The model a tuned model projects (the embedder itself when it is not tuned)."""
    from face_assets.core.tuning.model import TunedEmbedder

    return embedder.base if isinstance(embedder, TunedEmbedder) else embedder


def embed_crops(embedder: FaceEmbedder, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The crops' embeddings and, for a tuned model, its base model's (kept with the faces)."""
    base = base_of(embedder)
    if base is embedder:
        return embedder.embed(crops), None
    base_vectors = base.embed(crops)
    return embedder.project(base_vectors), base_vectors  # type: ignore[attr-defined]


def switch_model(store: FaceStore, embedder: FaceEmbedder, batch: int = SWITCH_BATCH) -> int:
    """Gives every face embedded by another model `embedder`'s embedding. From the base
    embeddings the faces keep when it can (no photo is read): to a tuned model, from its base or
    from another tuning of the same base; back to the base, its stored embedding exactly. A face
    of another base model (FaceNet's, moving to FaceNet fused with dlib's) loses its embedding,
    for the embedding step to read its photo again. A batch of faces a transaction, the
    persons' sums following: a killed switch resumes where it stopped, no person ever sums two
    models' vectors, and names, corrections and persons stay. Returns the faces moved."""
    from face_assets.core.tuning.model import MARK

    target, base = embedder.name, base_of(embedder).name
    moved = forgotten = 0
    with track("switch model", None, "faces") as advance:
        while rows := store.faces_of_other_models(target, batch):
            ids, bases, again = [], [], []
            for face_id, model, embedding, base_embedding in rows:
                stored = None
                if model == base:
                    stored = embedding
                elif model is not None and model.startswith(base + MARK):
                    stored = base_embedding
                try:
                    vector = decode_embedding(stored)
                except ValueError:
                    vector = None  # unreadable: as good as none
                if vector is None or vector.shape != (base_of(embedder).dim,):
                    again.append(face_id)  # not computable from what is stored: from its photo
                    continue
                ids.append(face_id)
                bases.append(vector)
            if again:
                with saving(f"embeddings of {len(again)} faces left to be made again from their photos"):
                    store.forget_embeddings(again)
                forgotten += len(again)
            if ids:
                base_vectors = np.stack(bases).astype(np.float32)
                with saving(f"embeddings of {len(ids)} faces moved to {target}"):
                    if target == base:
                        store.save_embeddings(ids, base_vectors, target)
                    else:
                        store.save_embeddings(ids, embedder.project(base_vectors), target, base_vectors)  # type: ignore[attr-defined]
            moved += len(rows)
            advance(len(rows))
    if forgotten:
        logger.info("%d faces of another model are embedded again from their photos", forgotten)
    if moved > forgotten:
        store.rebuild_person_sums()  # every sum of the new model's embeddings, exactly
    return moved


def require_library_model(store: FaceStore, embedder: FaceEmbedder) -> None:
    """MixedModels in one line when some face's embedding comes from another model: a batch
    never switches the library (the `all` run does, `switch_model`)."""
    other = store.other_embedding_model(embedder.name)
    if other is not None:
        raise MixedModels(
            f"the library's faces are embedded by {other}, FACE_ASSETS_EMBEDDER is {embedder.name}: "
            "the embeddings of two models are never mixed; move the library to the new model "
            "with `face-assets recognize` (or face_embeddings for the partition all), or set "
            "FACE_ASSETS_EMBEDDER back"
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
    switched: int = 0  # faces moved from another model's embedding to this one's (switch_model)

    @property
    def ms_per_face(self) -> float:
        return 1000.0 * self.embed_seconds / max(self.faces, 1)


def embed_faces(
    store: FaceStore, embedder: FaceEmbedder, batch_faces: int = 64, id_range: IdRange = None
) -> EmbeddingRun:
    if id_range is None:
        run_switched = switch_model(store, embedder)
    else:
        require_library_model(store, embedder)
        run_switched = 0
    run = EmbeddingRun(switched=run_switched)
    pending_ids: list[int] = []
    pending_crops: list[np.ndarray] = []

    def flush() -> None:
        if not pending_ids:
            return
        started = time.perf_counter()
        vectors, base_vectors = embed_crops(embedder, np.stack(pending_crops))
        embedded = time.perf_counter()
        with saving(f"embeddings of {len(pending_ids)} faces"):
            store.save_embeddings(pending_ids, vectors, embedder.name, base_vectors)
        run.embed_seconds += embedded - started
        run.write_seconds += time.perf_counter() - embedded
        run.faces += len(pending_ids)
        pending_ids.clear()
        pending_crops.clear()

    def crops_of(group: tuple[Path, list[FaceRecord]]) -> list[np.ndarray] | None:
        media = open_media(group[0])
        if isinstance(media, VideoInfo):
            return None  # a video: its frames are read below as a stream, never all at once
        return [embedder.cut(media, f.box_xyxy, f.landmarks) for f in group[1]]

    def stream_video(path: Path, faces: list[FaceRecord]) -> None:
        """A video's faces in batches as its frames are decoded: memory stays one batch's."""
        kept = len(pending_ids)
        try:
            for image, members in frames_of_faces(path, faces):
                pending_ids.extend(f.id for f in members)
                pending_crops.extend(embedder.cut(image, f.box_xyxy, f.landmarks) for f in members)
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
    params = params or track_params_for(store.any_embedding_model())
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
