"""Asset checks: the invariants a user relies on, verified after each materialisation.

A check on a batch asset looks at its run's batch only, so that a batch run costs what the
batch costs; the whole library is checked with each clustering (it reads every embedding
anyway), by the batch `all` (the command line's), and when a check is executed on its own.
"""

import dagster as dg

from face_assets.assets import detected_faces, face_embeddings, person_clusters
from face_assets.core.batch import IdRange, parse_batch_key
from face_assets.resources import FaceStoreResource


def checked_batch(context: dg.AssetCheckExecutionContext) -> IdRange:
    """The media items a check looks at: its run's batch, or every one (None) for the batch
    `all` or a run without a partition (the check executed on its own)."""
    return parse_batch_key(context.partition_key) if context.has_partition_key else None


def _scope(id_range: IdRange) -> str:
    return "library" if id_range is None else f"media items {id_range[0]}-{id_range[1]}"


def _embeddings_result(face_store: FaceStoreResource, id_range: IdRange) -> dg.AssetCheckResult:
    checked, problems = face_store.get_store().embedding_problems(id_range=id_range)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "checked": _scope(id_range),
            "embeddings_checked": checked,
            "problems": "\n".join(problems) or "none",
        },
    )


def _half_processed_result(face_store: FaceStoreResource, id_range: IdRange) -> dg.AssetCheckResult:
    items = face_store.get_store().half_processed_media_items(id_range=id_range)
    return dg.AssetCheckResult(
        passed=not items,
        metadata={"checked": _scope(id_range), "media_item_ids": str(items) if items else "none"},
    )


@dg.asset_check(asset=face_embeddings, blocking=True)
def embeddings_are_unit_512(
    context: dg.AssetCheckExecutionContext, face_store: FaceStoreResource
) -> dg.AssetCheckResult:
    """Every embedding of the batch is 512 finite float32 values of unit norm."""
    return _embeddings_result(face_store, checked_batch(context))


@dg.asset_check(asset=detected_faces, blocking=True)
def no_half_processed_media_items(
    context: dg.AssetCheckExecutionContext, face_store: FaceStoreResource
) -> dg.AssetCheckResult:
    """No media item of the batch has faces without being marked processed."""
    return _half_processed_result(face_store, checked_batch(context))


# The library-wide checks ride on the clustering: not blocking, as a bad row another
# application wrote must not keep the gallery from being drawn.
@dg.asset_check(asset=person_clusters)
def library_embeddings_are_unit_512(face_store: FaceStoreResource) -> dg.AssetCheckResult:
    """Every embedding in the library is 512 finite float32 values of unit norm."""
    return _embeddings_result(face_store, None)


@dg.asset_check(asset=person_clusters)
def library_has_no_half_processed_media_items(face_store: FaceStoreResource) -> dg.AssetCheckResult:
    """No media item in the library has faces without being marked processed."""
    return _half_processed_result(face_store, None)


@dg.asset_check(asset=person_clusters)
def faces_point_at_existing_persons(face_store: FaceStoreResource) -> dg.AssetCheckResult:
    """No face points at a person that does not exist."""
    faces = face_store.get_store().faces_with_missing_person()
    return dg.AssetCheckResult(passed=not faces, metadata={"face_ids": str(faces) if faces else "none"})


BATCH_CHECKS = [embeddings_are_unit_512, no_half_processed_media_items]
LIBRARY_CHECKS = [
    library_embeddings_are_unit_512,
    library_has_no_half_processed_media_items,
    faces_point_at_existing_persons,
]
ALL_CHECKS = [*BATCH_CHECKS, *LIBRARY_CHECKS]
