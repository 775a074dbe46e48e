"""Jobs: a batch of media items, the clustering of all faces, the registration of a folder."""

import dagster as dg

from face_assets.assets import BATCH_ASSETS, media_items, person_clusters, person_gallery

RECLUSTER_TAG = "face_assets/recluster"
# Batch runs carry this tag: the run queue's limit on it is how many batches run at once.
BATCH_TAG = "face_assets/batch"

process_batch_job = dg.define_asset_job(
    "process_batch_job",
    selection=dg.AssetSelection.assets(*BATCH_ASSETS),
    tags={BATCH_TAG: "true"},
    description="Detects, crops, embeds and matches the faces of one batch of media items.",
)

recluster_persons_job = dg.define_asset_job(
    "recluster_persons_job",
    selection=dg.AssetSelection.assets(person_clusters, person_gallery),
    # With the tag limit in dagster.yaml a second clustering run queues instead of starting.
    tags={RECLUSTER_TAG: "true"},
    # The checks of person_clusters come along: the library-wide ones, which batch runs skip.
    description="Clusters all faces into persons and checks the whole library; never two at once.",
)

register_media_job = dg.define_asset_job(
    "register_media_job",
    selection=dg.AssetSelection.assets(media_items),
    description="Registers the images of the media folder as media items.",
)
