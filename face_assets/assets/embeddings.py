"""FaceNet embeddings of the detected faces."""

import dagster as dg

from face_assets.assets.faces import detected_faces
from face_assets.assets.leases import batch_lease
from face_assets.assets.metadata import error_preview, load_model
from face_assets.assets.tuning import tuned_embedder
from face_assets.core.batch import parse_batch_key
from face_assets.core.embedding import embed_faces
from face_assets.partitions import media_item_partitions
from face_assets.resources import FaceModelsResource, FaceStoreResource


@dg.asset(group_name="faces", deps=[detected_faces, tuned_embedder], partitions_def=media_item_partitions)
def face_embeddings(
    context: dg.AssetExecutionContext, face_store: FaceStoreResource, face_models: FaceModelsResource
) -> dg.MaterializeResult:
    """A 512-d unit-norm embedding for every face of the batch; the faces of each video are
    then followed across its frames into tracks. Over the whole library (partition `all`), faces
    of another model first move to FACE_ASSETS_EMBEDDER's."""
    store = face_store.get_store()
    with batch_lease(context, store):
        embedder = face_models.get_embedder()
        loading = load_model(embedder)
        run = embed_faces(store, embedder, id_range=parse_batch_key(context.partition_key))
    for error in run.errors:
        context.log.warning(error)
    return dg.MaterializeResult(
        metadata={
            "faces_embedded": run.faces,
            # Faces given this model's embedding from the base embedding they keep (a switch of
            # FACE_ASSETS_EMBEDDER, done by the run over the whole library).
            "faces_moved_to_model": run.switched,
            "media_items": run.media_items,
            "video_tracks": run.tracks,
            "ms_per_face": round(run.ms_per_face, 1),
            "embed_seconds": round(run.embed_seconds, 2),
            **loading,
            "embedder": embedder.name,
            "errors": len(run.errors),
            "error_preview": error_preview(run.errors),
        }
    )
