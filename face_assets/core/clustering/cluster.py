"""Clustering of face embeddings into persons, and matching faces to existing persons."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

NOISE = -1


Algorithm = Literal["agglomerative", "hdbscan", "dbscan"]

# Average linkage keeps a condensed distance matrix: n^2 / 2 doubles, 1.6 GB at 20 000 faces.
MAX_LINKAGE_FACES = 20_000


@dataclass(frozen=True)
class ClusterParams:
    """How faces become persons. Defaults are tuned on labelled photos (see README).

    Every algorithm ends with the same rule, average linkage on cosine similarity: two groups
    are one person when their faces are, on average, at least `link_threshold` similar.
    """

    algorithm: Algorithm = "agglomerative"
    link_threshold: float = 0.35  # mean pairwise cosine similarity that joins two groups
    min_cluster_size: int = 3
    min_samples: int = 2  # HDBSCAN/DBSCAN density
    eps: float = 0.5  # DBSCAN: cosine distance
    match_threshold: float = 0.45  # cosine similarity to an existing person's mean to join it
    use_umap: bool = False
    random_state: int = 0

    def __post_init__(self) -> None:
        if self.algorithm not in ("agglomerative", "hdbscan", "dbscan"):
            raise ValueError(f"algorithm must be agglomerative, hdbscan or dbscan, got {self.algorithm!r}")
        if self.min_cluster_size < 2:
            raise ValueError(f"min_cluster_size must be >= 2, got {self.min_cluster_size}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")
        if not 0.0 < self.eps < 2.0:
            raise ValueError(f"eps must be in (0, 2), got {self.eps}")
        if not -1.0 < self.link_threshold < 1.0:
            raise ValueError(f"link_threshold must be in (-1, 1), got {self.link_threshold}")
        if not -1.0 <= self.match_threshold <= 1.0:
            raise ValueError(f"match_threshold must be in [-1, 1], got {self.match_threshold}")


def l2_normalize(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _reduce(vectors: NDArray[np.float32], params: ClusterParams) -> NDArray[np.float32]:
    """UMAP to a few dimensions for the density step (optional extra `umap`)."""
    if len(vectors) < 10:
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

    "agglomerative" is exact average linkage (up to MAX_LINKAGE_FACES faces; beyond that it
    starts from HDBSCAN). HDBSCAN and DBSCAN give a first partition that average linkage then
    corrects: mixed clusters are split, pieces of one person merged, stray faces attached.
    Groups smaller than min_cluster_size are noise.
    """
    count = len(embeddings)
    if count < max(params.min_cluster_size, 2):
        return np.full(count, NOISE, dtype=np.int64)
    vectors = l2_normalize(np.asarray(embeddings, dtype=np.float32))
    if params.use_umap:
        # UMAP distorts distances: it only shapes the density step; the similarity rule is
        # applied to the embeddings themselves.
        labels = refine(vectors, _density_labels(_reduce(vectors, params), params), params.link_threshold)
    elif params.algorithm == "agglomerative" and count <= MAX_LINKAGE_FACES:
        labels = average_linkage(vectors, params.link_threshold)
    else:
        labels = refine(vectors, _density_labels(vectors, params), params.link_threshold)
    return _drop_small(labels, params.min_cluster_size)


def _density_labels(vectors: NDArray[np.float32], params: ClusterParams) -> NDArray[np.int64]:
    """First partition by density. On unit vectors Euclidean distance orders pairs as cosine
    distance does (d^2 = 2 - 2 cos), so eps, given in cosine distance, is converted."""
    if params.algorithm == "dbscan":
        from sklearn.cluster import DBSCAN

        radius = float(np.sqrt(2.0 * params.eps))
        labels = DBSCAN(eps=radius, min_samples=params.min_samples).fit_predict(vectors)
    else:
        from sklearn.cluster import HDBSCAN

        labels = HDBSCAN(
            min_cluster_size=params.min_cluster_size, min_samples=params.min_samples, copy=True
        ).fit_predict(vectors)
    return np.asarray(labels, dtype=np.int64)


def average_linkage(vectors: NDArray[np.float32], link_threshold: float) -> NDArray[np.int64]:
    """Exact average-linkage (UPGMA) clusters on cosine distance, cut at 1 - link_threshold."""
    if len(vectors) == 1:
        return np.zeros(1, dtype=np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(vectors.astype(np.float64), method="average", metric="cosine")
    return np.asarray(fcluster(tree, t=1.0 - link_threshold, criterion="distance"), dtype=np.int64) - 1


def refine(
    vectors: NDArray[np.float32], labels: NDArray[np.int64], link_threshold: float
) -> NDArray[np.int64]:
    """Corrects a partition of unit vectors by the average-linkage rule.

    1. Each cluster is split by average linkage (a cluster of strangers falls apart).
    2. Clusters whose mean pairwise similarity reaches the threshold merge (one person split
       by density becomes one again); mean pairwise similarity of A and B is
       sum(A) . sum(B) / (|A| |B|), so whole clusters merge exactly as average linkage would.
    3. A noise face joins the cluster it is most similar to on average, if that reaches the
       threshold.
    """
    out = np.full(len(labels), NOISE, dtype=np.int64)
    next_label = 0
    for label in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == label)
        if len(members) > MAX_LINKAGE_FACES:
            logger.warning("a cluster of %d faces is too large to check; kept as it is", len(members))
            parts = np.zeros(len(members), dtype=np.int64)
        else:
            parts = average_linkage(vectors[members], link_threshold)
        out[members] = parts + next_label
        next_label += int(parts.max()) + 1
    if next_label == 0:
        return out

    sums = np.zeros((next_label, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, out[out >= 0], vectors[out >= 0])
    sizes = np.bincount(out[out >= 0], minlength=next_label).astype(np.float64)
    alive = np.ones(next_label, dtype=bool)
    mean_sim = (sums @ sums.T) / np.outer(sizes, sizes)
    np.fill_diagonal(mean_sim, -np.inf)
    target = np.arange(next_label)
    while True:
        a, b = divmod(int(np.argmax(mean_sim)), next_label)
        if mean_sim[a, b] < link_threshold:
            break
        # Lance-Williams update for average linkage: the merged row is the size-weighted mean.
        merged = (sizes[a] * mean_sim[a] + sizes[b] * mean_sim[b]) / (sizes[a] + sizes[b])
        sums[a] += sums[b]
        sizes[a] += sizes[b]
        mean_sim[a], mean_sim[:, a] = merged, merged
        mean_sim[b], mean_sim[:, b] = -np.inf, -np.inf
        mean_sim[a, a] = -np.inf
        alive[b] = False
        target[target == b] = a
    out = np.where(out >= 0, target[np.maximum(out, 0)], NOISE)

    noise = np.flatnonzero(out == NOISE)
    if len(noise):
        live = np.flatnonzero(alive)
        affinity = (vectors[noise].astype(np.float64) @ sums[live].T) / sizes[live]
        best = affinity.argmax(axis=1)
        joins = affinity[np.arange(len(noise)), best] >= link_threshold
        out[noise[joins]] = live[best[joins]]
    _, dense = np.unique(out, return_inverse=True)
    return np.where(out >= 0, dense - (1 if (out < 0).any() else 0), NOISE).astype(np.int64)


def _drop_small(labels: NDArray[np.int64], min_size: int) -> NDArray[np.int64]:
    """Groups below `min_size` become noise; the remaining labels are renumbered 0..k-1."""
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, np.int64)
    keep = np.flatnonzero(sizes >= min_size)
    mapping = np.full(len(sizes), NOISE, dtype=np.int64)
    mapping[keep] = np.arange(len(keep))
    return np.where(labels >= 0, mapping[np.maximum(labels, 0)], NOISE).astype(np.int64)


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
