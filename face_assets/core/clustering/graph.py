"""Average linkage at any library size: a k-nearest-neighbour graph, then exact linkage on it.

All-pairs average linkage needs n^2 / 2 distances (minutes and gigabytes at 20 000 faces). Here
the candidate merges come from a kNN graph (exact below EXACT_KNN_MAX faces, an inverted-file
index from faiss above), and every candidate is scored exactly: for unit vectors the mean
pairwise cosine similarity of groups A and B is sum(A) . sum(B) / (|A| |B|), so a group's sum
and size are all that linkage needs. Merges then follow the reciprocal-nearest-neighbour rule:
average linkage is reducible, so merging every pair of groups that are each other's best
candidate, round after round, gives the same tree as merging the single best pair at a time.
Memory is O(n k + n d).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

# Exact neighbours by blocked matrix products up to this many faces (a few seconds at 20 000).
EXACT_KNN_MAX = 20_000
_BLOCK = 2048
# Cells whose faces each cell's faces are compared with (itself included), above EXACT_KNN_MAX.
PROBE = 12
# Similarities computed at once (and candidate vectors gathered at once) within a cell: 64 MB.
WORK = 1 << 24


@dataclass(frozen=True)
class KnnGraph:
    """`neighbours[i]` are the indices of row i's nearest rows (itself excluded), most similar
    first, with their cosine `similarities`; shape (n_faces, k). Missing entries are -1."""

    neighbours: NDArray[np.int64]
    similarities: NDArray[np.float32]
    seconds: float
    method: str


def knn_graph(vectors: NDArray[np.float32], k: int, random_state: int = 0) -> KnnGraph:
    """The k nearest neighbours by cosine similarity of unit vectors of shape (n_faces, n_dims)."""
    started = time.perf_counter()
    count = len(vectors)
    k = max(1, min(k, count - 1))
    if count <= EXACT_KNN_MAX:
        neighbours, similarities = _exact_knn(vectors, k)
        method = "exact"
    else:
        neighbours, similarities = _ivf_knn(vectors, k, random_state)
        method = "cells"
    return KnnGraph(neighbours, similarities, time.perf_counter() - started, method)


def _exact_knn(vectors: NDArray[np.float32], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    count = len(vectors)
    neighbours = np.full((count, k), -1, dtype=np.int64)
    similarities = np.full((count, k), -np.inf, dtype=np.float32)
    for start in range(0, count, _BLOCK):
        block = vectors[start : start + _BLOCK] @ vectors.T
        rows = np.arange(len(block))
        block[rows, start + rows] = -np.inf  # a face is not its own neighbour
        top = np.argpartition(-block, k - 1, axis=1)[:, :k] if k < count else np.argsort(-block, axis=1)
        values = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        neighbours[start : start + len(block)] = np.take_along_axis(top, order, axis=1)
        similarities[start : start + len(block)] = np.take_along_axis(values, order, axis=1)
    return neighbours, similarities


def _ivf_knn(
    vectors: NDArray[np.float32], k: int, random_state: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Neighbours within nearby cells: k-means (faiss) puts the faces into about 2 sqrt(n)
    cells; the faces of each cell are compared with those of the PROBE cells whose centres are
    nearest. Cost O(n sqrt(n) d) in dense products instead of O(n^2 d); the faces of one person
    share a cell or sit in neighbouring ones. A cell may hold a large part of the library (one
    person in most of the photos), so its products are made in blocks of at most WORK
    similarities, each folded into the members' running top k (_cell_knn)."""
    import faiss

    count, dims = vectors.shape
    cells = int(min(max(64, 2 * np.sqrt(count)), 8192))
    kmeans = faiss.Kmeans(
        dims, cells, niter=12, seed=random_state, spherical=True, max_points_per_centroid=64
    )
    rng = np.random.default_rng(random_state)
    kmeans.train(np.ascontiguousarray(vectors[rng.choice(count, size=min(count, 64 * cells), replace=False)]))
    centres = np.asarray(kmeans.centroids, dtype=np.float32)
    quantizer = faiss.IndexFlatIP(dims)
    quantizer.add(centres)
    _, cell_of = quantizer.search(np.ascontiguousarray(vectors), 1)
    cell_of = cell_of.ravel()
    probes = min(PROBE, cells)
    _, nearby = quantizer.search(centres, probes)
    order = np.argsort(cell_of, kind="stable")
    bounds = np.searchsorted(cell_of[order], np.arange(cells + 1))
    neighbours = np.full((count, k), -1, dtype=np.int64)
    similarities = np.full((count, k), -np.inf, dtype=np.float32)
    for cell in range(cells):
        members = order[bounds[cell] : bounds[cell + 1]]
        if not len(members):
            continue
        probed = [c for c in nearby[cell] if c >= 0]
        candidates = np.concatenate([order[bounds[c] : bounds[c + 1]] for c in probed])
        # The cell's own faces are one run of its candidates: member i sits at own + i.
        sizes = [bounds[c + 1] - bounds[c] for c in probed]
        own = int(sum(sizes[: probed.index(cell)])) if cell in probed else -1
        found, values = _cell_knn(vectors, members, candidates, own, k)
        neighbours[members] = found
        similarities[members] = values
    similarities[neighbours < 0] = -np.inf
    return neighbours, similarities


def _cell_knn(
    vectors: NDArray[np.float32], members: NDArray[np.int64], candidates: NDArray[np.int64], own: int, k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The k most similar candidates of each member (indices into `vectors`, -1 where fewer),
    most similar first; member i is candidate own + i (own -1: no member is a candidate), never
    its own neighbour. Blocks of at most WORK similarities (and gathered vectors), each folded
    into one running top k per member by faiss's heaps (multi-threaded, unlike a partial sort
    of the block), so that memory is O(members k) plus the block, whatever the cell's size."""
    import faiss

    dims = vectors.shape[1]
    values = np.empty((len(members), k), dtype=np.float32)
    found = np.empty((len(members), k), dtype=np.int64)
    heaps = faiss.float_minheap_array_t()  # the k largest
    heaps.k, heaps.nh = k, len(members)
    heaps.val, heaps.ids = faiss.swig_ptr(values), faiss.swig_ptr(found)
    heaps.heapify()
    columns = max(1, min(len(candidates), WORK // dims))
    rows = max(1, min(len(members), WORK // columns, WORK // dims))
    for first in range(0, len(candidates), columns):
        part = vectors[candidates[first : first + columns]]
        for top in range(0, len(members), rows):
            block = np.ascontiguousarray(vectors[members[top : top + rows]] @ part.T, dtype=np.float32)
            if own >= 0:  # a face is not its own neighbour
                at = own + np.arange(top, top + len(block)) - first
                inside = (at >= 0) & (at < len(part))
                block[np.flatnonzero(inside), at[inside]] = -np.inf
            # The stub lists two arguments; the C++ method also takes the column and row offsets.
            heaps.addn(len(part), faiss.swig_ptr(block), first, top, len(block))  # type: ignore[call-arg]
    heaps.reorder()
    found = np.where(found >= 0, candidates[np.maximum(found, 0)], -1)
    return found, values


def subgraph(graph: KnnGraph, rows: NDArray[np.int64]) -> KnnGraph:
    """The graph among `rows` only (indices renumbered 0..len(rows)-1; other neighbours -1)."""
    position = np.full(len(graph.neighbours), -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    neighbours = graph.neighbours[rows]
    inside = np.where(neighbours >= 0, position[np.maximum(neighbours, 0)], -1)
    similarities = np.where(inside >= 0, graph.similarities[rows], -np.inf).astype(np.float32)
    return KnnGraph(inside, similarities, 0.0, graph.method)


def _directed_distances(graph: KnnGraph) -> Any:
    """The graph's edges as a sparse matrix of cosine distances (CSR), one per kNN entry."""
    from scipy import sparse

    count, k = graph.neighbours.shape
    valid = graph.neighbours.ravel() >= 0
    rows = np.repeat(np.arange(count, dtype=np.int32), k)[valid]
    cols = graph.neighbours.ravel()[valid].astype(np.int32)
    # A stored zero would read as a missing edge: identical faces stay a hair apart.
    distances = np.maximum(1.0 - graph.similarities.ravel()[valid].astype(np.float64), 1e-6)
    return sparse.csr_matrix((distances, (rows, cols)), shape=(count, count))


def _bridges(labels: NDArray[np.int64], components: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """One edge from the first row of every component but the first to the first row of the
    first: (from, to). They carry the largest distance, 2, which no cluster crosses."""
    roots = np.unique(labels, return_index=True)[1]
    return roots[1:], np.full(components - 1, roots[0])


def distance_matrix(graph: KnnGraph) -> Any:
    """The graph as a symmetric sparse matrix of cosine distances (CSR), connected: separate
    components are joined by edges of the largest distance, 2, which no cluster crosses."""
    from scipy import sparse
    from scipy.sparse import csgraph

    matrix = _directed_distances(graph)
    matrix = matrix.maximum(matrix.T).tocsr()
    components, labels = csgraph.connected_components(matrix, directed=False)
    if components > 1:
        ends, hub = _bridges(labels, components)
        bridges = sparse.csr_matrix((np.full(components - 1, 2.0), (ends, hub)), shape=matrix.shape)
        matrix = (matrix + bridges + bridges.T).tocsr()
    return matrix


def graph_hdbscan(graph: KnnGraph, min_cluster_size: int, min_samples: int = 1) -> NDArray[np.int64]:
    """HDBSCAN on the kNN graph's distances instead of all pairs: the minimum spanning tree of
    the sparse graph, then scikit-learn's condensed tree and cluster selection. Labels per face,
    -1 for noise."""
    count = len(graph.neighbours)
    if count < max(min_cluster_size, 2):
        return np.full(count, -1, dtype=np.int64)
    if min_samples > 1:
        return _sklearn_hdbscan(graph, min_cluster_size, min_samples)
    try:
        from sklearn.cluster._hdbscan.hdbscan import MST_edge_dtype, _process_mst, tree_to_labels
    except ImportError:  # a scikit-learn whose internals moved: the same result, more memory
        return _sklearn_hdbscan(graph, min_cluster_size, min_samples)
    # With min_samples 1 the mutual reachability distance is the distance itself, so the tree is
    # the graph's own minimum spanning tree. scikit-learn's estimator would first copy the
    # matrix, symmetrise it and compare it with its transpose: over 4 GB at 1 000 000 faces.
    # The spanning tree takes each directed edge as an undirected one, so no symmetric copy.
    tree = _spanning_tree(graph)
    single_linkage = _process_mst(np.rec.fromarrays(tree, dtype=MST_edge_dtype))
    labels, _ = tree_to_labels(single_linkage, min_cluster_size, "eom", False, 0.0, None)
    if (labels < 0).all():
        # No split at all: the faces are one group or none (HDBSCAN never keeps the root
        # unless asked). A person in pieces is joined again by membership.merge_similar.
        labels, _ = tree_to_labels(single_linkage, min_cluster_size, "eom", True, 0.0, None)
    return np.asarray(labels, dtype=np.int64)


def _spanning_tree(graph: KnnGraph) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """(first ends, second ends, cosine distances) of the n - 1 edges of a minimum spanning tree
    of the graph; separate components are joined by edges of the largest distance, 2."""
    from scipy.sparse import csgraph

    forest = csgraph.minimum_spanning_tree(_directed_distances(graph)).tocoo()
    first, second, weight = forest.row.astype(np.int64), forest.col.astype(np.int64), forest.data
    components, labels = csgraph.connected_components(forest, directed=False)
    if components > 1:
        ends, hub = _bridges(labels, components)
        first, second = np.concatenate([first, ends]), np.concatenate([second, hub])
        weight = np.concatenate([weight, np.full(components - 1, 2.0)])
    return first, second, weight


def _sklearn_hdbscan(graph: KnnGraph, min_cluster_size: int, min_samples: int) -> NDArray[np.int64]:
    from sklearn.cluster import HDBSCAN

    matrix = distance_matrix(graph)
    model = HDBSCAN(
        min_cluster_size=min_cluster_size, min_samples=min_samples, metric="precomputed", copy=True
    )
    labels = np.asarray(model.fit_predict(matrix), dtype=np.int64)
    if (labels < 0).all():
        model.set_params(allow_single_cluster=True)
        labels = np.asarray(model.fit_predict(matrix), dtype=np.int64)
    return labels


def graph_average_linkage(
    vectors: NDArray[np.float32], graph: KnnGraph, link_threshold: float
) -> NDArray[np.int64]:
    """Average-linkage clusters of unit vectors (n_faces, n_dims), cut where the mean pairwise
    cosine similarity of two groups falls below `link_threshold`; candidate merges are the
    graph's edges. Returns a cluster label per face, 0..k-1 (singletons included)."""
    count = len(vectors)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    # Two groups average at least the threshold only if some pair of their faces reaches it,
    # so weaker edges can never lead to a merge.
    rows = np.repeat(np.arange(count, dtype=np.int64), graph.neighbours.shape[1])
    cols = graph.neighbours.ravel()
    sims = graph.similarities.ravel()
    keep = (cols >= 0) & (sims >= link_threshold) & (rows != cols)
    a, b = np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])
    a, b, weight = _dedupe(a, b, sims[keep].astype(np.float32))

    root = np.arange(count, dtype=np.int64)  # cluster of each face: the id of one of its faces
    sizes = np.ones(count, dtype=np.float64)
    sums: NDArray[np.float32] | None = None  # a copy of the vectors, made at the first merge
    rounds = 0
    while len(a):
        rounds += 1
        # Each group's best candidate, then the pairs that chose each other.
        ends = np.concatenate([a, b])
        others = np.concatenate([b, a])
        weights = np.concatenate([weight, weight])
        order = np.lexsort((-weights, ends))
        first = np.ones(len(order), dtype=bool)
        first[1:] = ends[order[1:]] != ends[order[:-1]]
        chooser = ends[order[first]]
        chosen = others[order[first]]
        best = np.full(count, -1, dtype=np.int64)
        best[chooser] = chosen
        mutual = chooser[(best[chosen] == chooser) & (chooser < chosen)]
        if not len(mutual):  # only possible through exact ties; break them by merging the best edge
            top = int(np.argmax(weight))
            mutual = np.array([a[top]])
            best[a[top]] = b[top]
        keep_ids, gone_ids = mutual, best[mutual]
        if sums is None:
            sums = vectors.astype(np.float32, copy=True)
        sums[keep_ids] += sums[gone_ids]
        sizes[keep_ids] += sizes[gone_ids]
        remap = np.arange(count, dtype=np.int64)
        remap[gone_ids] = keep_ids
        root = remap[root]
        touched = np.zeros(count, dtype=bool)
        touched[keep_ids] = True
        a, b = remap[a], remap[b]
        a, b = np.minimum(a, b), np.maximum(a, b)
        live = a != b
        a, b, weight = _dedupe(a[live], b[live], weight[live])
        # Only edges of groups that grew change their linkage; it is recomputed exactly.
        stale = np.flatnonzero(touched[a] | touched[b])
        for start in range(0, len(stale), 262_144):
            part = stale[start : start + 262_144]
            dots = np.einsum("ij,ij->i", sums[a[part]], sums[b[part]], dtype=np.float64)
            weight[part] = (dots / (sizes[a[part]] * sizes[b[part]])).astype(np.float32)
        strong = weight >= link_threshold
        a, b, weight = a[strong], b[strong], weight[strong]
    logger.debug("graph average linkage: %d faces, %d rounds", count, rounds)
    _, labels = np.unique(root, return_inverse=True)
    return labels.astype(np.int64)


def _dedupe(
    a: NDArray[np.int64], b: NDArray[np.int64], weight: NDArray[np.float32]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """One edge per pair (a < b); of duplicates the first weight is kept (they are equal for
    exact linkage; between singletons both directions carry the same similarity)."""
    if not len(a):
        return a, b, weight
    key = a * (int(max(a.max(), b.max())) + 1) + b
    _, first = np.unique(key, return_index=True)
    return a[first], b[first], weight[first]
