"""Fine-tuning from start to saved model: usable labels, identities held out, training, the
artefact and its manifest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from face_assets.core.tuning.labels import Labels
from face_assets.core.tuning.model import Manifest, now, save_tuned, tuned_name, write_latest
from face_assets.core.tuning.triplet import Epoch, TrainingParams, train_projection
from face_assets.core.vision.types import FaceEmbedder

# A fifth of the labelled identities (one at least) score each epoch and stop the training.
VALIDATION_SHARE = 0.2


def base_checksum(embedder: FaceEmbedder) -> str:
    """The sha256 of the base model's weights (the stub has none: its name)."""
    from face_assets.core.vision.embedding import FaceNetEmbedder
    from face_assets.core.vision.weights import FACENET_GRAPH

    return FACENET_GRAPH.sha256 if embedder.name == FaceNetEmbedder.name else embedder.name


def finetune(
    labels: Labels,
    base: FaceEmbedder,
    models_dir: Path,
    params: TrainingParams | None = None,
    on_epoch: Callable[[Epoch], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> Manifest:
    """Trains a projection of `base`'s embeddings on `labels` and saves it as a model; its
    manifest. TooFewLabels (one line) when the labels cannot teach anything."""
    params = params or TrainingParams()
    usable = labels.usable()
    held, _ = usable.split(VALIDATION_SHARE, params.seed)
    training = train_projection(
        usable.vectors[~held], usable.identities[~held], (usable.vectors[held], usable.identities[held]),
        params, on_epoch=on_epoch, on_step=on_step,
    )  # fmt: skip
    settings = asdict(params)
    manifest = Manifest(
        name=tuned_name(base.name, usable.digest(), settings),
        base=base.name,
        base_sha256=base_checksum(base),
        labels=usable.digest(),
        source=usable.source,
        identities=len(usable.names),
        faces=len(usable.vectors),
        epochs=len(training.epochs),
        best_epoch=training.best_epoch,
        validation_loss_before=round(training.validation_before, 4),
        validation_loss_after=round(training.validation_after, 4),
        validation_recall_before=round(training.recall_before, 4),
        validation_recall_after=round(training.recall_after, 4),
        seconds=round(training.seconds, 1),
        created=now(),
        params=settings,
    )
    save_tuned(models_dir, manifest, training.projection)
    write_latest(models_dir, manifest.name)  # FACE_ASSETS_EMBEDDER=tuned now names it
    return manifest
