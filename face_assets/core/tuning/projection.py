"""The tuned part of a tuned model: a residual map on the base model's 512-d embeddings,
y = normalise(x + relu(x W1 + b1) W2 + b2). W2 and b2 start at zero, so an untrained projection
is the base model exactly; training moves it only as far as the labels ask."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from face_assets.core.clustering.vectors import l2_normalize
from face_assets.core.storage.codecs import EMBEDDING_DIM


@dataclass(frozen=True)
class Projection:
    w1: NDArray[np.float32]  # (512, hidden)
    b1: NDArray[np.float32]  # (hidden,)
    w2: NDArray[np.float32]  # (hidden, 512)
    b2: NDArray[np.float32]  # (512,)

    @classmethod
    def identity(cls, hidden: int, seed: int = 0, dim: int = EMBEDDING_DIM) -> Projection:
        """The base model itself (`dim` values): a random first layer, a zero second one."""
        rng = np.random.default_rng(seed)
        scale = np.sqrt(2.0 / dim)  # He initialisation for the ReLU layer
        return cls(
            (rng.standard_normal((dim, hidden)) * scale).astype(np.float32),
            np.zeros(hidden, np.float32),
            np.zeros((hidden, dim), np.float32),
            np.zeros(dim, np.float32),
        )

    @property
    def hidden(self) -> int:
        return int(self.w1.shape[1])

    def apply(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        """Unit vectors of the tuned model from the base model's (n, 512)."""
        x = np.asarray(vectors, dtype=np.float32)
        residual = np.maximum(x @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2
        return l2_normalize(x + residual)

    def save(self, path: Path) -> None:
        with path.open("wb") as out:
            np.savez(out, w1=self.w1, b1=self.b1, w2=self.w2, b2=self.b2)

    @classmethod
    def load(cls, path: Path) -> Projection:
        with np.load(path) as saved:
            return cls(*(saved[k].astype(np.float32) for k in ("w1", "b1", "w2", "b2")))
