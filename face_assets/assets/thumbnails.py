"""Thumbnails: the square thumbnail files of a batch's faces that detection did not write."""

import dagster as dg

from face_assets.assets.faces import detected_faces
from face_assets.assets.leases import batch_lease
from face_assets.assets.metadata import error_preview
from face_assets.core.batch import parse_batch_key
from face_assets.core.thumbnail import ThumbnailFolderError, write_thumbnails
from face_assets.partitions import media_item_partitions
from face_assets.resources import FaceStoreResource, ThumbnailStoreResource


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
