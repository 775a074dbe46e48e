"""Clustering of face embeddings into persons, and matching faces to existing persons."""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray

from face_assets.core.clustering.graph import (
    KnnGraph,
    distance_matrix,
    graph_average_linkage,
    graph_hdbscan,
    knn_graph,
    subgraph,
)
from face_assets.core.clustering.membership import (
    enough_for_a_person,
    fixed_point,
    group_sums,
    one_per_media_item,
    pair_keys,
    partners,
    too_small,
)
from face_assets.core.clustering.params import ClusterParams
from face_assets.core.clustering.vectors import NOISE, l2_normalize

logger = logging.getLogger(__name__)


# Exact all-pairs linkage (scipy) keeps n^2 / 2 doubles: only for comparisons on small sets.
MAX_EXACT_LINKAGE_FACES = 20_000


def _reduce(vectors: NDArray[np.float32], params: ClusterParams) -> NDArray[np.float32]:
    """UMAP to a few dimensions for the graph (optional extra `umap`)."""
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


def unit_rows(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    """The rows as unit float32 vectors; the array itself when they already are (a library's
    embeddings are: 2 GB at 1 000 000 faces, not to be copied twice)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms2 = np.einsum("ij,ij->i", vectors, vectors)
    return vectors if np.allclose(norms2, 1.0, atol=1e-4) else l2_normalize(vectors)


def cluster_embeddings(
    embeddings: NDArray[np.float32],
    params: ClusterParams,
    graph: KnnGraph | None = None,
    rows: NDArray[np.int64] | None = None,
    weights: NDArray[np.int64] | None = None,
    media_item_ids: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]:
    """Cluster labels for embeddings of shape (n_faces, n_dims); -1 marks noise.

    All three algorithms work on a k-nearest-neighbour graph (graph.py), so memory is O(n k):
    "hdbscan" is HDBSCAN on the graph's distances, "agglomerative" average linkage over the
    graph's edges cut at `link_threshold`, "dbscan" DBSCAN with radius `eps`. The membership
    rule (membership.py) then decides, to a fixed point, which faces are in each group. `graph`,
    when given, must be the embeddings' own graph. With `rows`, only those faces are clustered,
    on their part of the graph, and their labels returned (the other faces count as absent).
    Groups smaller than min_cluster_size are noise. `weights` (per embedding, default 1) are the
    faces a row stands for: a video track is one row that counts its faces towards a group's
    size, and one weighing min_cluster_size alone becomes a group when it joins none. Two rows
    that are each other's nearest face (in different `media_item_ids`, default each row its
    own) with similarity pair_threshold or more become a group of two when they join none.
    """
    vectors = unit_rows(embeddings)
    weights = (
        np.ones(len(vectors), dtype=np.int64) if weights is None else np.asarray(weights, dtype=np.int64)
    )
    rows = np.arange(len(vectors), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    # Nothing can become a person when the rows together are too little evidence for one,
    # counted by weight, not rows: one new video's tracks are two rows of 15 faces each, and
    # an incremental run must decide on them as a rebuild does.
    if not enough_for_a_person(weights[rows].sum(), min(params.min_cluster_size, 2)):
        return np.full(len(rows), NOISE, dtype=np.int64)
    if params.use_umap or params.algorithm == "agglomerative" or graph is None:
        # These need the rows on their own: UMAP distorts distances, so it only shapes the
        # graph and membership is decided on the embeddings themselves (person.py).
        if len(rows) < len(vectors):
            vectors, graph = vectors[rows], None if graph is None else subgraph(graph, rows)
            weights = weights[rows]
            rows = np.arange(len(vectors), dtype=np.int64)
        if params.use_umap:
            graph = knn_graph(_reduce(vectors, params), params.neighbours, params.random_state)
        elif graph is None:
            graph = knn_graph(vectors, params.neighbours, params.random_state)
    everyone = len(rows) == len(vectors)
    part = graph if everyone else subgraph(graph, rows)
    if len(rows) < 2:  # a lone row (one video track): the rule below decides whether it starts a person
        found = np.full(len(rows), NOISE, dtype=np.int64)
    elif params.algorithm == "hdbscan":
        found = graph_hdbscan(part, params.min_cluster_size, params.min_samples)
    elif params.algorithm == "agglomerative":
        found = graph_average_linkage(vectors, part, params.link_threshold)
    else:
        from sklearn.cluster import DBSCAN

        model = DBSCAN(eps=params.eps, min_samples=params.min_samples, metric="precomputed")
        found = np.asarray(model.fit_predict(distance_matrix(part)), dtype=np.int64)
    del part
    # Density and linkage take in faces at a group's edge; the membership rule decides. The
    # other faces are absent: noise here, never movable, so the whole graph serves as well as
    # the rows' own part (an absent neighbour is no vote and no candidate either way).
    movable = np.zeros(len(vectors), dtype=bool)
    movable[rows] = True
    labels = np.full(len(vectors), NOISE, dtype=np.int64)
    labels[rows] = found
    labels = _drop_small(labels, params.min_cluster_size, weights)
    # The persons a face could join here: these groups (settling counts the library's too).
    rule = params.rule(len(np.unique(labels[labels >= 0])))
    if media_item_ids is None:
        media_item_ids = np.arange(len(vectors), dtype=np.int64)  # each face its own
    pairs = partners(graph, media_item_ids, params.pair_threshold)
    labels = fixed_point(
        vectors, labels, 0, movable, media_item_ids, graph, rule, params.merge(), params.min_cluster_size,
        weights, seed=True, partners=pairs,
    )  # fmt: skip
    labels = _drop_small(labels, params.min_cluster_size, weights, pairs)
    return labels[rows]


def exact_average_linkage(vectors: NDArray[np.float32], link_threshold: float) -> NDArray[np.int64]:
    """All-pairs average linkage (UPGMA, scipy) cut at 1 - link_threshold: the reference the
    graph version is measured against; O(n^2) memory, up to MAX_EXACT_LINKAGE_FACES faces."""
    if len(vectors) == 1:
        return np.zeros(1, dtype=np.int64)
    if len(vectors) > MAX_EXACT_LINKAGE_FACES:
        raise ValueError(f"exact linkage is limited to {MAX_EXACT_LINKAGE_FACES} faces, got {len(vectors)}")
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(vectors.astype(np.float64), method="average", metric="cosine")
    return np.asarray(fcluster(tree, t=1.0 - link_threshold, criterion="distance"), dtype=np.int64) - 1


def _drop_small(
    labels: NDArray[np.int64],
    min_size: int,
    weights: NDArray[np.int64] | None = None,
    pairs: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]:
    """Groups weighing less than `min_size` become noise, unless they hold a pair (`pairs`,
    membership.partners); the others are renumbered 0..k-1."""
    if not (labels >= 0).any():
        return np.full(len(labels), NOISE, dtype=np.int64)
    weights = np.ones(len(labels), dtype=np.int64) if weights is None else weights
    count = int(labels.max()) + 1
    keep = np.flatnonzero(~too_small(labels, weights, min_size, count, pairs))
    mapping = np.full(count, NOISE, dtype=np.int64)
    mapping[keep] = np.arange(len(keep))
    return np.where(labels >= 0, mapping[np.maximum(labels, 0)], NOISE).astype(np.int64)


def person_centroids(
    vectors: NDArray[np.float32], person_ids: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Unit-norm mean embedding per person: (person ids, (n_persons, n_dims))."""
    ids = np.unique(person_ids[person_ids >= 0])
    if not len(ids):
        return ids, np.zeros((0, vectors.shape[1]), dtype=np.float32)
    dense = np.where(person_ids >= 0, np.searchsorted(ids, person_ids), NOISE)
    return ids, l2_normalize(group_sums(dense, vectors, len(ids)))


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
    pairs = np.array(sorted(taken or ()), dtype=np.int64).reshape(-1, 2)
    return one_per_media_item(chosen, best, media_item_ids, pair_keys(pairs[:, 0], pairs[:, 1])), best
