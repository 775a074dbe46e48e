"""Detect: the faces in a batch's media items (with their thumbnails and embeddings, cut from
the decode that found them)."""

import dagster as dg

from face_assets.assets.leases import batch_lease
from face_assets.assets.media_items import media_items
from face_assets.assets.metadata import error_preview, listed, load_model
from face_assets.core.batch import parse_batch_key
from face_assets.core.face import ThumbnailTarget, detect_faces
from face_assets.partitions import media_item_partitions
from face_assets.resources import FaceModelsResource, FaceStoreResource, ThumbnailStoreResource


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
