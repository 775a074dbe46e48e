"""Clustering of face embeddings into persons, and matching faces to existing persons."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

NOISE = -1


@dataclass(frozen=True)
class ClusterParams:
    """How faces become persons. Defaults are tuned on labelled photos (see README)."""

    algorithm: Literal["hdbscan", "dbscan"] = "hdbscan"
    min_cluster_size: int = 3
    min_samples: int = 2
    eps: float = 0.5  # DBSCAN: cosine distance
    match_threshold: float = 0.5  # cosine similarity to join an existing person
    use_umap: bool = False
    random_state: int = 0

    def __post_init__(self) -> None:
        if self.algorithm not in ("hdbscan", "dbscan"):
            raise ValueError(f"algorithm must be hdbscan or dbscan, got {self.algorithm!r}")
        if self.min_cluster_size < 2:
            raise ValueError(f"min_cluster_size must be >= 2, got {self.min_cluster_size}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")
        if not 0.0 < self.eps < 2.0:
            raise ValueError(f"eps must be in (0, 2), got {self.eps}")
        if not -1.0 <= self.match_threshold <= 1.0:
            raise ValueError(f"match_threshold must be in [-1, 1], got {self.match_threshold}")


def l2_normalize(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _reduce(vectors: NDArray[np.float32], params: ClusterParams) -> NDArray[np.float32]:
    """Optional UMAP to a few dimensions; its output is what gets clustered."""
    if not params.use_umap or len(vectors) < 10:
        return vectors
    try:
        import umap
    except ImportError as error:
        raise RuntimeError("cluster_use_umap needs the optional extra: pip install umap-learn") from error
    reducer = umap.UMAP(
        n_components=min(16, len(vectors) - 2), n_neighbors=min(15, len(vectors) - 1),
        metric="cosine", min_dist=0.0, random_state=params.random_state,
    )  # fmt: skip
    return l2_normalize(np.asarray(reducer.fit_transform(vectors), dtype=np.float32))


def cluster_embeddings(embeddings: NDArray[np.float32], params: ClusterParams) -> NDArray[np.int64]:
    """Cluster labels for embeddings of shape (n_faces, n_dims); -1 marks noise.

    Embeddings are L2-normalised first, so Euclidean distance orders pairs exactly as cosine
    distance does (d^2 = 2 - 2 cos); eps is given in cosine distance and converted.
    """
    count = len(embeddings)
    if count < max(params.min_cluster_size, 2):
        return np.full(count, NOISE, dtype=np.int64)
    vectors = _reduce(l2_normalize(np.asarray(embeddings, dtype=np.float32)), params)
    if params.algorithm == "dbscan":
        from sklearn.cluster import DBSCAN

        radius = float(np.sqrt(2.0 * params.eps))
        labels = DBSCAN(eps=radius, min_samples=params.min_samples).fit_predict(vectors)
    else:
        from sklearn.cluster import HDBSCAN

        labels = HDBSCAN(
            min_cluster_size=params.min_cluster_size,
            min_samples=params.min_samples,
            metric="euclidean",
            allow_single_cluster=False,
            copy=True,
        ).fit_predict(vectors)
    labels = np.asarray(labels, dtype=np.int64)
    if params.algorithm == "dbscan":
        labels = _drop_small(labels, params.min_cluster_size)
    return labels


def _drop_small(labels: NDArray[np.int64], min_size: int) -> NDArray[np.int64]:
    out = labels.copy()
    for label in np.unique(labels[labels >= 0]):
        if (labels == label).sum() < min_size:
            out[labels == label] = NOISE
    return out


def person_centroids(
    vectors: NDArray[np.float32], person_ids: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Unit-norm mean embedding per person: (person ids, (n_persons, n_dims))."""
    ids = np.unique(person_ids[person_ids >= 0])
    if not len(ids):
        return ids, np.zeros((0, vectors.shape[1]), dtype=np.float32)
    sums = np.zeros((len(ids), vectors.shape[1]), dtype=np.float64)
    index = np.searchsorted(ids, person_ids[person_ids >= 0])
    np.add.at(sums, index, vectors[person_ids >= 0])
    return ids, l2_normalize(sums.astype(np.float32))


def match_to_persons(
    vectors: NDArray[np.float32],
    media_item_ids: NDArray[np.int64],
    centroid_ids: NDArray[np.int64],
    centroids: NDArray[np.float32],
    threshold: float,
    taken: set[tuple[int, int]] | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Best person per face with cosine similarity >= threshold, else -1.

    Two faces of one media item never go to the same person: the more similar one wins, and
    a person who already has a face in that item (`taken`: (media item, person)) is skipped.
    Returns (person id per face, similarity to it).
    """
    count = len(vectors)
    chosen = np.full(count, NOISE, dtype=np.int64)
    best = np.full(count, -1.0, dtype=np.float32)
    if not count or not len(centroid_ids):
        return chosen, best
    unit = l2_normalize(vectors)
    for start in range(0, count, 4096):  # bounded memory: 4096 x n_persons at a time
        similarity = unit[start : start + 4096] @ centroids.T
        top = similarity.argmax(axis=1)
        best[start : start + 4096] = similarity[np.arange(len(top)), top]
        chosen[start : start + 4096] = centroid_ids[top]
    chosen[best < threshold] = NOISE
    used = set(taken or ())
    # Most confident faces first, so a clash inside one media item keeps the better face.
    for face in np.argsort(-best, kind="stable"):
        if chosen[face] == NOISE:
            continue
        key = (int(media_item_ids[face]), int(chosen[face]))
        if key in used:
            chosen[face] = NOISE
            continue
        used.add(key)
    return chosen, best
