"""The two primitives every clustering step shares: the label of a face in no person, and unit
length for embeddings and their sums."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

NOISE = -1  # a face in no person: unassigned, or left out by the clustering


def l2_normalize(vectors: NDArray[np.floating]) -> NDArray[np.float32]:
    """Each row at unit length (a zero row stays zero), as float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
