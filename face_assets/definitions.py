"""The one Dagster code location of face_assets."""

import dagster as dg

from face_assets.assets import (
    detected_faces,
    face_embeddings,
    face_thumbnails,
    media_items,
    person_clusters,
)
from face_assets.resources import FaceModelsResource, FaceStoreResource, ThumbnailStoreResource

ALL_ASSETS = [media_items, detected_faces, face_thumbnails, face_embeddings, person_clusters]

process_media_job = dg.define_asset_job(
    "process_media_job",
    selection=dg.AssetSelection.assets(*ALL_ASSETS),
    description="Registers media, detects faces, writes thumbnails and embeddings, updates persons.",
)


def make_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources read nothing until a run starts: configuration comes from the environment then."""
    return {
        "face_store": FaceStoreResource(),
        "face_models": FaceModelsResource(),
        "thumbnails": ThumbnailStoreResource(),
    }


defs = dg.Definitions(assets=ALL_ASSETS, jobs=[process_media_job], resources=make_resources())
