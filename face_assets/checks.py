"""Asset checks: the invariants a user relies on, verified after each materialisation."""

import dagster as dg

from face_assets.assets import detected_faces, face_embeddings, person_clusters
from face_assets.resources import FaceStoreResource


@dg.asset_check(asset=face_embeddings, blocking=True)
def embeddings_are_unit_512(face_store: FaceStoreResource) -> dg.AssetCheckResult:
    """Every stored embedding is 512 finite float32 values of unit norm."""
    checked, problems = face_store.get_store().embedding_problems()
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"embeddings_checked": checked, "problems": "\n".join(problems) or "none"},
    )


@dg.asset_check(asset=detected_faces, blocking=True)
def no_half_processed_media_items(face_store: FaceStoreResource) -> dg.AssetCheckResult:
    """No media item has faces without being marked processed."""
    items = face_store.get_store().half_processed_media_items()
    return dg.AssetCheckResult(passed=not items, metadata={"media_item_ids": str(items) if items else "none"})


@dg.asset_check(asset=person_clusters)
def faces_point_at_existing_persons(face_store: FaceStoreResource) -> dg.AssetCheckResult:
    """No face points at a person that does not exist."""
    faces = face_store.get_store().faces_with_missing_person()
    return dg.AssetCheckResult(passed=not faces, metadata={"face_ids": str(faces) if faces else "none"})


ALL_CHECKS = [embeddings_are_unit_512, no_half_processed_media_items, faces_point_at_existing_persons]
