"""The tuned model: FaceNet fine-tuned on the library's labels (named persons, corrections),
upstream of the embeddings. Materialising it makes a model and makes it the one
FACE_ASSETS_EMBEDDER=tuned names; the next run over the whole library moves the faces to it.
The same labels make the same model (its name is their digest): materialising again without new
labels changes nothing."""

import dagster as dg

from face_assets.core.embedding import base_of
from face_assets.core.tuning.finetune import finetune
from face_assets.core.tuning.labels import TooFewLabels, labels_from_library
from face_assets.resources import FaceModelsResource, FaceStoreResource


@dg.asset(group_name="faces")
def tuned_embedder(
    context: dg.AssetExecutionContext, face_store: FaceStoreResource, face_models: FaceModelsResource
) -> dg.MaterializeResult:
    """A projection of the base model's embeddings trained with the triplet loss on the faces of
    named persons, the faces users moved, and those they rejected (docs/finetuning.md)."""
    base = base_of(face_models.get_embedder())
    labels = labels_from_library(face_store.get_store(), base.name)
    try:
        manifest = finetune(labels, base, face_models.models_folder(), on_epoch=lambda e: context.log.info(
            f"epoch {e.number}: loss {e.loss:.4f}, held-out loss {e.validation:.4f}"
        ))  # fmt: skip
    except TooFewLabels as error:
        # Not a failure of the run: materialising every asset (`--select "*"`) on a library nobody
        # has labelled yet must go on to the embeddings, which keep the model they have.
        context.log.warning(f"no model made: {error}")
        return dg.MaterializeResult(metadata={"model": "none", "why": str(error)})
    # Counts and scores only: the labels' names are personal data.
    return dg.MaterializeResult(
        metadata={
            "model": manifest.name,
            "base": manifest.base,
            "base_sha256": manifest.base_sha256,
            "labels_sha256": manifest.labels,
            "identities": manifest.identities,
            "faces": manifest.faces,
            "epochs": manifest.epochs,
            "kept_epoch": manifest.best_epoch,
            "held_out_loss_before": manifest.validation_loss_before,
            "held_out_loss_after": manifest.validation_loss_after,
            "held_out_pair_recall_before": manifest.validation_recall_before,
            "held_out_pair_recall_after": manifest.validation_recall_after,
            "seconds": manifest.seconds,
        }
    )
