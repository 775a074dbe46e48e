"""Register: media items in the database, with the media folder's files registered once each."""

from pathlib import Path

import dagster as dg

from face_assets.assets.metadata import PREVIEW_ROWS, listed
from face_assets.core.media_item import MediaFolderError, Registration, register_folder
from face_assets.resources import FaceStoreResource, ThumbnailStoreResource


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
