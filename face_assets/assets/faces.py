"""Media items, the faces detected in them, and their thumbnails."""

from pathlib import Path

import dagster as dg

from face_assets.assets.leases import batch_lease
from face_assets.assets.metadata import PREVIEW_ROWS, error_preview, listed, load_model
from face_assets.core.batch import parse_batch_key
from face_assets.core.face import ThumbnailTarget, detect_faces
from face_assets.core.media_item import MediaFolderError, Registration, register_folder
from face_assets.core.thumbnail import ThumbnailFolderError, write_thumbnails
from face_assets.partitions import media_item_partitions
from face_assets.resources import FaceModelsResource, FaceStoreResource, ThumbnailStoreResource


class MediaItemsConfig(dg.Config):
    folder: str = ""  # empty: FACE_ASSETS_MEDIA_DIR, or only rows other applications insert


@dg.asset(group_name="faces")
def media_items(
    context: dg.AssetExecutionContext,
    config: MediaItemsConfig,
    face_store: FaceStoreResource,
    thumbnails: ThumbnailStoreResource,
) -> dg.MaterializeResult:
    """Media items in the database, with the images of the media folder registered once each."""
    store = face_store.get_store()
    folder = config.folder or str(face_store.media_folder() or "")
    try:
        registration = register_folder(store, Path(folder), thumbnails.folder()) if folder else Registration()
    except MediaFolderError as error:
        # FACE_ASSETS_MEDIA_DIR names a folder that is not there (a typo, an unmounted disk):
        # one line in the UI and the Dagster CLI, not a stack trace.
        raise dg.Failure(description=f"{error} (FACE_ASSETS_MEDIA_DIR or the run's folder config)") from None
    skipped = [f"{path}: {reason}" for path, reason in registration.skipped]
    for line in skipped[:PREVIEW_ROWS]:
        context.log.warning(f"skipped {line}")
    if len(skipped) > PREVIEW_ROWS:
        context.log.warning(f"skipped {len(skipped) - PREVIEW_ROWS} more files (see the metadata)")
    counts = store.counts()
    return dg.MaterializeResult(
        metadata={
            "folder": folder or "(none: rows come from another application)",
            "registered": len(registration.added),
            "skipped": len(skipped),
            "skipped_files": listed(skipped),
            "not_media": registration.not_media,
            # Files whose content changed: processed again, their old faces retired.
            "replaced": len(registration.replaced),
            "replaced_files": listed([f"{path}: media item {item}" for path, item in registration.replaced]),
            "faces_retired": registration.retired_faces,
            "copies": len(registration.copies),  # identical copies: one media item, two paths
            # Movies of Live Photos linked to their photo's media item: that moment counts once.
            "live_photo_movies": len(registration.live_photo_movies),
            "missing": len(registration.missing),
            "missing_files": listed([str(path) for path in registration.missing]),
            "media_items_total": counts["media_items"],
            "media_items_pending": counts["media_items_pending"],
        }
    )


@dg.asset(group_name="faces", deps=[media_items], partitions_def=media_item_partitions)
def detected_faces(
    context: dg.AssetExecutionContext,
    face_store: FaceStoreResource,
    face_models: FaceModelsResource,
    thumbnails: ThumbnailStoreResource,
) -> dg.MaterializeResult:
    """Faces found in the batch's unprocessed media items, written with each item marked
    processed, with their thumbnails cut and, when the run embeds too, their embeddings made
    from the same decode of each photo."""
    store = face_store.get_store()
    with batch_lease(context, store):
        detector = face_models.get_detector()
        loading = load_model(detector)
        embedder, embedder_loading = None, {}
        if _run_embeds(context):
            embedder = face_models.get_embedder()
            embedder_loading = {f"embedder_{key}": value for key, value in load_model(embedder).items()}
        run = detect_faces(
            store,
            detector,
            id_range=parse_batch_key(context.partition_key),
            thumbnails=ThumbnailTarget(thumbnails.folder(), thumbnails.px()),
            video=face_models.video_sampling(),
            embedder=embedder,
        )
    for error in run.errors + run.unreadable + run.retry_later:
        context.log.warning(error)
    if run.thumbnail_error:
        context.log.warning(f"{run.thumbnail_error}; left to the face_thumbnails step")
    if run.embedding_error:
        context.log.warning(f"{run.embedding_error}; left to the face_embeddings step")
    metadata = {
        "media_items": run.media_items,
        "faces": run.faces,
        "thumbnails_written": run.thumbnails,
        "faces_embedded": run.embedded,
        # Photos decoded a second time, in full, for faces too small in the reduced decode.
        "full_decodes": run.full_decodes,
        "media_items_without_faces": run.without_faces,
        "videos": run.videos,
        "video_frames": run.frames,
        "errors": len(run.errors),
        "unreadable_retried_later": len(run.unreadable),
        "left_pending_after_failure": len(run.retry_later),
        "error_preview": error_preview(run.errors + run.unreadable + run.retry_later),
        "errors_listed": listed(run.errors),
        "unreadable_listed": listed(run.unreadable),
        "ms_per_media_item": round(run.ms_per_item, 1),
        "decode_seconds": round(run.decode_seconds, 2),
        "detect_seconds": round(run.detect_seconds, 2),
        "embed_seconds": round(run.embed_seconds, 2),
        **loading,
        **embedder_loading,
        "detector": detector.name,
        "embedder": embedder.name if embedder is not None else "",
        "thumbnail_error": run.thumbnail_error or "",
        "embedding_error": run.embedding_error or "",
    }
    if run.retry_later:
        # The batch fails visibly, after every other item was processed: rerun it from the UI.
        raise dg.Failure(
            description=f"{len(run.retry_later)} media items stay pending after a detector failure",
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


def _run_embeds(context: dg.AssetExecutionContext) -> bool:
    """Whether this run materialises the embeddings too: then detection makes them from the
    photo it decoded, and the embedding step has only the rest to do."""
    steps = context.run.step_keys_to_execute  # None: every step of the job
    return "face_embeddings" in (steps if steps is not None else context.job_def.graph.node_dict)


@dg.asset(group_name="faces", deps=[detected_faces], partitions_def=media_item_partitions)
def face_thumbnails(
    context: dg.AssetExecutionContext, face_store: FaceStoreResource, thumbnails: ThumbnailStoreResource
) -> dg.MaterializeResult:
    """Square thumbnail files of the batch's faces, named to never collide: those detection did
    not write (faces other applications inserted, a folder that was not writable then)."""
    batch = parse_batch_key(context.partition_key)
    store = face_store.get_store()
    try:
        with batch_lease(context, store):
            run = write_thumbnails(store, thumbnails.folder(), thumbnails.px(), batch)
    except ThumbnailFolderError as error:
        # One line in the UI too: the folder and the cause; the faces stay without thumbnails.
        raise dg.Failure(description=str(error)) from error
    for error in run.errors:
        context.log.warning(error)
    return dg.MaterializeResult(
        metadata={
            "thumbnails_written": run.faces,
            "media_items": run.media_items,
            "folder": str(thumbnails.folder()),
            "thumbnail_px": thumbnails.px(),
            "errors": len(run.errors),
            "error_preview": error_preview(run.errors),
            "seconds": round(run.seconds, 2),
        }
    )
