"""Seeded FaceNet-like embeddings: unit identity centres in 512-d plus gaussian noise.

With per-dimension noise sigma, |noise|^2 ~ 512 sigma^2, so two samples of one identity have
cosine ~ 1 / (1 + 512 sigma^2) (0.65 for the default) and samples of different identities ~ 0.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

Algorithm = Literal["agglomerative", "hdbscan", "dbscan"]
DIM = 512
SIGMA = float(np.sqrt((1 / 0.65 - 1) / DIM))  # same-identity cosine ~ 0.65


def unit(vectors: NDArray[np.float64]) -> NDArray[np.float32]:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def centres(rng: np.random.Generator, k: int) -> NDArray[np.float32]:
    return unit(rng.normal(size=(k, DIM)))


def samples(
    rng: np.random.Generator, centre: NDArray[np.float32], n: int, sigma: float = SIGMA
) -> NDArray[np.float32]:
    return unit(centre[None, :] + rng.normal(scale=sigma, size=(n, DIM)))


def identities(seed: int, k: int, n: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """(k * n unit vectors, identity label per row), identity-major order."""
    rng = np.random.default_rng(seed)
    cs = centres(rng, k)
    vectors = np.vstack([samples(rng, c, n) for c in cs])
    return vectors, np.repeat(np.arange(k, dtype=np.int64), n)
