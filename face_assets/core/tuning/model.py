"""A tuned model as a versioned artefact: `<models dir>/tuned/<name>/` holds the projection's
weights and a manifest (base model and its checksum, the labels' digest, identities, faces,
epochs, validation scores before and after, date). Its name is what FACE_ASSETS_EMBEDDER takes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_assets.core.errors import UserError
from face_assets.core.files import partial_file, write_atomically
from face_assets.core.tuning.projection import Projection
from face_assets.core.vision.types import EmbeddingArray, FaceEmbedder

TUNED_FOLDER = "tuned"
MARK = "-tuned-"  # a tuned model's name: <base model>-tuned-<8 hex digits>
MANIFEST = "manifest.json"
WEIGHTS = "projection.npz"
# FACE_ASSETS_EMBEDDER=tuned: the model made last in this models folder, named in this file.
LATEST_SETTING = "tuned"
LATEST = "latest"


class UnknownTunedModel(UserError):
    """FACE_ASSETS_EMBEDDER names a tuned model the models folder does not have."""


@dataclass(frozen=True)
class Manifest:
    name: str
    base: str  # the base embedder's name
    base_sha256: str  # its weights' checksum
    labels: str  # the labels' sha256 (Labels.digest)
    source: str  # the labelled folder, or "library"
    identities: int
    faces: int
    epochs: int
    best_epoch: int
    # The identities held out of training: their triplet loss and their pairs' recall at
    # precision 0.99, under the base model and the tuned one.
    validation_loss_before: float
    validation_loss_after: float
    validation_recall_before: float
    validation_recall_after: float
    seconds: float
    created: str
    params: dict[str, Any] = field(default_factory=dict)


def is_tuned(name: str) -> bool:
    return MARK in name


def tuned_name(base: str, labels_digest: str, params: dict[str, Any]) -> str:
    """The same base, labels and training parameters always give the same name."""
    key = json.dumps({"base": base, "labels": labels_digest, "params": params}, sort_keys=True)
    return f"{base}{MARK}{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def model_folder(models_dir: Path, name: str) -> Path:
    return Path(models_dir) / TUNED_FOLDER / name


def save_tuned(models_dir: Path, manifest: Manifest, projection: Projection) -> Path:
    """The weights, then the manifest: a folder with a manifest is a whole model."""
    folder = model_folder(models_dir, manifest.name)
    folder.mkdir(parents=True, exist_ok=True)
    with partial_file(folder / WEIGHTS) as partial:
        projection.save(partial)
        partial.replace(folder / WEIGHTS)
    write_atomically(folder / MANIFEST, (json.dumps(asdict(manifest), indent=1) + "\n").encode())
    return folder


def write_latest(models_dir: Path, name: str) -> None:
    write_atomically(Path(models_dir) / TUNED_FOLDER / LATEST, (name + "\n").encode())


def resolve_embedder(name: str, models_dir: Path) -> str:
    """The embedder setting's model: `tuned` is the model made last (`face-assets finetune`, or
    the tuned_embedder asset), read at each resolution so that a new one takes effect."""
    if name != LATEST_SETTING:
        return name
    try:
        return (Path(models_dir) / TUNED_FOLDER / LATEST).read_text().strip()
    except FileNotFoundError:
        raise UnknownTunedModel(
            f"embedder tuned: no tuned model in {Path(models_dir) / TUNED_FOLDER} yet; make one with "
            "`face-assets finetune` or by materialising tuned_embedder"
        ) from None


def read_manifest(models_dir: Path, name: str) -> Manifest:
    path = model_folder(models_dir, name) / MANIFEST
    try:
        return Manifest(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise UnknownTunedModel(
            f"embedder {name}: no tuned model at {path.parent} (FACE_ASSETS_EMBEDDER; "
            "`face-assets finetune` makes one)"
        ) from None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class TunedEmbedder:
    """The base embedder, then the projection: the name is the tuned model's."""

    def __init__(self, base: FaceEmbedder, manifest: Manifest, projection: Projection) -> None:
        if base.name != manifest.base:
            raise UnknownTunedModel(f"embedder {manifest.name} tunes {manifest.base}, not {base.name}")
        self.base = base
        self.name = manifest.name
        self.manifest = manifest
        self.projection = projection
        self.input_px = base.input_px
        self.dim = base.dim  # the projection keeps the base's dimension
        self.cut = base.cut
        self.batch_size = getattr(base, "batch_size", 32)

    @property
    def loaded(self) -> bool:
        return bool(getattr(self.base, "loaded", True))

    def load(self) -> None:
        self.base.load()

    def embed(self, crops: NDArray[np.float32]) -> EmbeddingArray:
        return self.project(self.base.embed(crops))

    def project(self, base_vectors: NDArray[np.float32]) -> EmbeddingArray:
        """The tuned embeddings of faces whose base embeddings are known: no photo needed."""
        return self.projection.apply(base_vectors)


def load_tuned(models_dir: Path, name: str, base: FaceEmbedder) -> TunedEmbedder:
    manifest = read_manifest(models_dir, name)
    return TunedEmbedder(base, manifest, Projection.load(model_folder(models_dir, name) / WEIGHTS))
