"""Labelled faces to learn from: each face's base-model embedding and its identity."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from face_assets.core.errors import UserError
from face_assets.core.evaluation import labelled_images, picked_faces
from face_assets.core.storage.codecs import decode_embedding, embedding_dim
from face_assets.core.storage.store import FaceStore
from face_assets.core.vision.types import FaceDetector, FaceEmbedder

# Below these the triplets repeat a handful of faces: the projection would learn them, not faces.
MIN_IDENTITIES = 5  # with two faces or more each; a fifth of them (one at least) held out
MIN_FACES = 20


class TooFewLabels(UserError):
    """The labels cannot teach anything: too few identities or faces."""


@dataclass(frozen=True)
class Labels:
    vectors: NDArray[np.float32]  # (n, 512) unit embeddings of the base model
    # (n,) index into `names`; a negative's own number from len(names) on: no one's positive
    identities: NDArray[np.int64]
    names: tuple[str, ...]
    source: str  # the folder, or "library"
    negative: NDArray[np.bool_] | None = None  # faces a user rejected from a person

    def _negative(self) -> NDArray[np.bool_]:
        return self.negative if self.negative is not None else np.zeros(len(self.vectors), dtype=bool)

    def digest(self) -> str:
        """Which labels these are: identities, faces and their embeddings, as one sha256."""
        digest = hashlib.sha256()
        digest.update("\n".join(self.names).encode())
        digest.update(np.ascontiguousarray(self.identities, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(self.vectors, dtype=np.float32).tobytes())
        return digest.hexdigest()

    def usable(self) -> Labels:
        """The identities with two faces or more (a face alone has no positive) and the
        negatives; TooFewLabels in one line when that cannot teach anything."""
        negative = self._negative()
        counts = np.bincount(self.identities[~negative], minlength=len(self.names))
        kept = np.flatnonzero(counts >= 2)
        positive = ~negative & (counts[np.where(negative, 0, self.identities)] >= 2)
        faces = int(positive.sum())
        if len(kept) < MIN_IDENTITIES or faces < MIN_FACES:
            raise TooFewLabels(
                f"{self.source}: too few labels to learn from: {len(kept)} identities with two faces "
                f"or more, {faces} faces in them; fine-tuning needs {MIN_IDENTITIES} identities and "
                f"{MIN_FACES} faces at least"
            )
        keep = positive | negative
        renumber = np.full(len(self.names), -1, dtype=np.int64)
        renumber[kept] = np.arange(len(kept))
        identities = np.where(negative, 0, renumber[np.where(negative, 0, self.identities)])[keep]
        negatives = negative[keep]
        identities[negatives] = len(kept) + np.arange(int(negatives.sum()))
        names = tuple(self.names[i] for i in kept)
        return Labels(self.vectors[keep], identities, names, self.source, negatives)

    def split(self, share: float, seed: int) -> tuple[NDArray[np.bool_], int]:
        """Rows of the identities held out for validation (`share` of the named ones, one at
        least, drawn with `seed`; negatives stay in training), and how many identities."""
        rng = np.random.default_rng(seed)
        count = max(1, int(round(len(self.names) * share)))
        held = rng.choice(len(self.names), count, replace=False)
        return np.isin(self.identities, held) & ~self._negative(), count


def labels_from_folder(
    folder: Path, detector: FaceDetector, embedder: FaceEmbedder, identity_depth: int = 1
) -> Labels:
    """The faces of a labelled folder (`<identity>/<photo>`, the layout `evaluate` reads): each
    photo's largest face is its identity's, embedded by `embedder` (the base model)."""
    from face_assets.core.face import detect_faces
    from face_assets.core.media_item import register_folder

    images = labelled_images(folder, identity_depth)
    with tempfile.TemporaryDirectory(prefix="face-assets-finetune-") as tmp:
        store = FaceStore.from_url(f"sqlite:///{Path(tmp) / 'labels.db'}", upgrade=True)
        try:
            register_folder(store, folder)
            detect_faces(store, detector, embedder=embedder)
            picked = picked_faces(store, images, "largest")
            data = store.face_embeddings()
        finally:
            store.dispose()
    row_of = {int(f): r for r, f in enumerate(data.face_ids)}
    names = sorted({identity for _, identity in images})
    code = {name: i for i, name in enumerate(names)}
    labelled = [
        (row_of[face["id"]], code[identity]) for _, identity, face in picked if face and face["id"] in row_of
    ]
    rows, identities = [row for row, _ in labelled], [identity for _, identity in labelled]
    return Labels(data.vectors[rows], np.array(identities, dtype=np.int64), tuple(names), str(folder))


def labels_from_library(store: FaceStore, base: str) -> Labels:
    """What the user's names and corrections say: the faces of each person a user named or
    placed faces in are that person's; faces a user rejected are negatives. Only faces whose
    embedding is `base`'s take part (the others are a tuned model's)."""
    faces = [f for f in store.labelled_faces() if f.model == base]
    dim = embedding_dim(base)
    vectors, kept = [], []
    for face in faces:
        vector = decode_embedding(face.embedding)
        if vector is not None and vector.shape == (dim,):
            vectors.append(vector)
            kept.append(face)
    persons = sorted({f.person_id for f in kept if f.person_id is not None})
    code = {person: i for i, person in enumerate(persons)}
    negative = np.array([f.rejected for f in kept], dtype=bool)
    identities = np.array(
        [code.get(f.person_id, 0) if f.person_id is not None else 0 for f in kept], np.int64
    )
    identities[negative] = len(persons) + np.arange(int(negative.sum()))
    matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    return Labels(matrix, identities, tuple(f"person {p}" for p in persons), "library", negative)
