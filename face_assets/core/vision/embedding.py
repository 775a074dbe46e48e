"""Face embedder: FaceNet 20180402-114759 through keras-facenet's network, weights offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_assets.core.vision import weights
from face_assets.core.vision.lazy import LazyModel
from face_assets.core.vision.types import EmbeddingArray, FaceEmbedder

EMBEDDING_DIM = 512


class FaceNetEmbedder(LazyModel):
    """512-d, L2-normalised embeddings of 160x160 crops normalised as (x - 127.5) / 128."""

    name = "facenet-20180402-114759"
    input_px = 160

    def __init__(self, models_dir: Path, batch_size: int = 32, fetch: bool = True) -> None:
        super().__init__()
        self.models_dir = Path(models_dir)
        self.batch_size = batch_size
        self.fetch = fetch
        self._infer: Any = None

    def _load(self) -> None:
        graph_path = weights.resolve(weights.FACENET_GRAPH, self.models_dir, fetch=self.fetch)
        import tensorflow as tf

        from face_assets.core.vision.facenet_weights import build_facenet_keras

        model = build_facenet_keras(graph_path)
        # One traced graph for one batch shape: eager Keras is ~20x slower per face on CPU.
        self._infer = tf.function(
            lambda batch: model(batch, training=False),
            autograph=False,
            input_signature=[tf.TensorSpec((self.batch_size, self.input_px, self.input_px, 3), tf.float32)],
        )

    def embed(self, crops: NDArray[np.float32]) -> EmbeddingArray:
        self.load()
        count = len(crops)
        out = np.empty((count, EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, count, self.batch_size):
            chunk = crops[start : start + self.batch_size]
            batch = np.zeros((self.batch_size, self.input_px, self.input_px, 3), dtype=np.float32)
            batch[: len(chunk)] = chunk
            out[start : start + len(chunk)] = np.asarray(self._infer(batch))[: len(chunk)]
        return out


def make_embedder(name: str, models_dir: Path, batch_size: int = 32, fetch: bool = True) -> FaceEmbedder:
    if name in ("facenet-20180402", FaceNetEmbedder.name):
        return FaceNetEmbedder(models_dir, batch_size=batch_size, fetch=fetch)
    raise ValueError(f"unknown embedder {name!r}; choose facenet-20180402")
