from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from face_assets.core.clustering.cluster import (
    NOISE,
    ClusterParams,
    cluster_embeddings,
    match_to_persons,
    person_centroids,
)
from face_assets_tests.core_tests.synthetic import DIM, Algorithm, centres, identities, samples, unit


def _impure_clusters(labels: NDArray[np.int64], truth: NDArray[np.int64]) -> list[list[int]]:
    """The identities mixed in each cluster holding more than one identity."""
    mixed = [sorted(set(truth[labels == c].tolist())) for c in np.unique(labels[labels >= 0])]
    return [ids for ids in mixed if len(ids) > 1]


def _share_in_majority_cluster(labels: NDArray[np.int64], truth: NDArray[np.int64]) -> float:
    """Fraction of samples in the cluster holding most of their identity's samples."""
    hits = 0
    for identity in np.unique(truth):
        own = labels[truth == identity]
        if (own >= 0).any():
            hits += int(np.bincount(own[own >= 0]).max())
    return hits / len(truth)


@pytest.mark.parametrize(
    "changes",
    [
        {"algorithm": "kmeans"},
        {"min_cluster_size": 1},
        {"min_samples": 0},
        {"eps": 0.0},
        {"eps": 2.0},
        {"link_threshold": 1.0},
        {"link_threshold": -1.0},
        {"match_threshold": 1.01},
        {"match_threshold": -1.01},
    ],
)
def test_cluster_params_rejects_invalid_values(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ClusterParams(**changes)


def test_synthetic_embeddings_look_like_facenet() -> None:
    """Guards the fixture: same identity ~0.65 cosine, different identities ~0."""
    vectors, truth = identities(seed=0, k=20, n=5)
    similarity = vectors @ vectors.T
    same = (truth[:, None] == truth[None, :]) & ~np.eye(len(truth), dtype=bool)
    different = truth[:, None] != truth[None, :]
    assert 0.6 < similarity[same].mean() < 0.7
    assert abs(similarity[different].mean()) < 0.02
    assert similarity[different].max() < similarity[same].min()


@pytest.mark.parametrize("algorithm", ["agglomerative", "hdbscan", "dbscan"])
@pytest.mark.parametrize(("k", "n"), [(5, 20), (40, 5), (100, 4)])
@pytest.mark.parametrize("seed", [0, 1])
def test_clusters_are_pure_and_recover_identities(algorithm: Algorithm, k: int, n: int, seed: int) -> None:
    vectors, truth = identities(seed, k, n)
    labels = cluster_embeddings(vectors, ClusterParams(algorithm=algorithm))
    assert labels.shape == (k * n,) and labels.dtype == np.int64
    assert _impure_clusters(labels, truth) == []
    assert _share_in_majority_cluster(labels, truth) >= 0.9


@pytest.mark.slow  # numba compiles UMAP first: seconds of CPU
def test_umap_shapes_the_density_step_but_clusters_stay_pure() -> None:
    """UMAP distances are not cosine: the similarity rule still decides on the embeddings."""
    vectors, truth = identities(seed=5, k=8, n=8)
    labels = cluster_embeddings(vectors, ClusterParams(algorithm="hdbscan", use_umap=True))
    assert _impure_clusters(labels, truth) == []
    assert _share_in_majority_cluster(labels, truth) >= 0.9


@pytest.mark.parametrize("algorithm", ["agglomerative", "hdbscan", "dbscan"])
def test_clustering_ignores_vector_scale(algorithm: Algorithm) -> None:
    """Embeddings are compared by angle: rescaling rows changes nothing."""
    vectors, _ = identities(seed=3, k=6, n=6)
    scales = np.random.default_rng(3).uniform(0.2, 5.0, size=(len(vectors), 1)).astype(np.float32)
    params = ClusterParams(algorithm=algorithm)
    np.testing.assert_array_equal(
        cluster_embeddings(vectors * scales, params), cluster_embeddings(vectors, params)
    )


@pytest.mark.parametrize("algorithm", ["agglomerative", "hdbscan", "dbscan"])
def test_fewer_points_than_min_cluster_size_are_all_noise(algorithm: Algorithm) -> None:
    vectors, _ = identities(seed=0, k=1, n=4)
    params = ClusterParams(algorithm=algorithm, min_cluster_size=5, pair_threshold=1.0)
    labels = cluster_embeddings(vectors, params)
    assert labels.tolist() == [NOISE] * 4
    assert cluster_embeddings(np.zeros((0, DIM), np.float32), ClusterParams()).shape == (0,)


def test_dbscan_drops_clusters_smaller_than_min_cluster_size() -> None:
    vectors, truth = identities(seed=2, k=2, n=3)
    big, _ = identities(seed=5, k=1, n=6)
    labels = cluster_embeddings(
        np.vstack([vectors, big]), ClusterParams(algorithm="dbscan", min_cluster_size=4, pair_threshold=1.0)
    )
    assert (labels[:6] == NOISE).all()
    assert len(set(labels[6:].tolist())) == 1 and labels[6] >= 0


@pytest.mark.parametrize("algorithm", ["agglomerative", "hdbscan", "dbscan"])
def test_strangers_seen_once_are_never_grouped(algorithm: Algorithm) -> None:
    """Photo libraries are full of passers-by: faces unrelated to anyone (cosine ~0) must stay noise.

    Ten people with five photos each, plus forty strangers who each appear once.
    """
    vectors, truth = identities(seed=0, k=10, n=5)
    strangers = centres(np.random.default_rng(1000), 40)
    all_vectors = np.vstack([vectors, strangers])
    all_truth = np.concatenate([truth, 100 + np.arange(40)])
    labels = cluster_embeddings(all_vectors, ClusterParams(algorithm=algorithm))
    assert _impure_clusters(labels, all_truth) == []


@pytest.mark.parametrize("algorithm", ["agglomerative", "hdbscan", "dbscan"])
def test_a_single_identity_becomes_a_single_cluster(algorithm: Algorithm) -> None:
    """A library (or a batch of new faces) holding one person gives that one person."""
    vectors, truth = identities(seed=0, k=1, n=20)
    labels = cluster_embeddings(vectors, ClusterParams(algorithm=algorithm))
    assert _share_in_majority_cluster(labels, truth) >= 0.9
    assert len(set(labels[labels >= 0].tolist())) == 1


def test_person_centroids_are_unit_means_per_person() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, DIM)).astype(np.float32)
    person_ids = np.array([7, -1, 3, 7, 3, 7], dtype=np.int64)
    ids, cents = person_centroids(vectors, person_ids)
    assert ids.tolist() == [3, 7]
    np.testing.assert_allclose(np.linalg.norm(cents, axis=1), 1.0, atol=1e-6)
    for pid, centroid in zip(ids, cents, strict=True):
        mean = vectors[person_ids == pid].astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(centroid, mean / np.linalg.norm(mean), atol=1e-6)


def test_person_centroids_without_persons_is_empty() -> None:
    ids, cents = person_centroids(np.ones((3, DIM), np.float32), np.full(3, NOISE, dtype=np.int64))
    assert ids.shape == (0,) and cents.shape == (0, DIM)


def _persons(seed: int = 0, k: int = 3) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    return np.array([10, 20, 30][:k], dtype=np.int64), centres(np.random.default_rng(seed), k)


def test_face_equal_to_a_centroid_matches_it() -> None:
    ids, cents = _persons()
    chosen, similarity = match_to_persons(cents[[2, 0]], np.array([1, 2]), ids, cents, 0.5)
    assert chosen.tolist() == [30, 10]
    np.testing.assert_allclose(similarity, 1.0, atol=1e-6)


def test_match_picks_the_most_similar_person() -> None:
    ids, cents = _persons()
    face = samples(np.random.default_rng(9), cents[1], 1)
    chosen, similarity = match_to_persons(face, np.array([1]), ids, cents, 0.5)
    assert chosen.tolist() == [20]
    assert similarity[0] == pytest.approx(float(face[0] @ cents[1]), abs=1e-6)


def test_match_below_threshold_is_noise() -> None:
    ids, cents = _persons()
    # Unit face at cosine 0.4 to person 10: 0.4 * its centroid + a unit vector orthogonal to it.
    r = np.random.default_rng(1).normal(size=DIM)
    orthogonal = unit(r - (r @ cents[0]) * cents[0])
    face = unit(0.4 * cents[0] + np.sqrt(1 - 0.4**2) * orthogonal)[None, :]
    assert float(face[0] @ cents[0]) == pytest.approx(0.4, abs=1e-5)
    chosen, _ = match_to_persons(face, np.array([1]), ids, cents, 0.5)
    assert chosen.tolist() == [NOISE]
    chosen, _ = match_to_persons(face, np.array([1]), ids, cents, 0.35)
    assert chosen.tolist() == [10]


def test_two_faces_of_one_media_item_never_share_a_person() -> None:
    ids, cents = _persons()
    rng = np.random.default_rng(4)
    close = unit(cents[1] + 0.01 * rng.normal(size=DIM))
    far = unit(cents[1] + 0.03 * rng.normal(size=DIM))
    assert float(close @ cents[1]) > float(far @ cents[1]) > 0.5
    chosen, _ = match_to_persons(np.vstack([far, close]), np.array([5, 5]), ids, cents, 0.5)
    assert chosen.tolist() == [NOISE, 20]


def test_same_person_in_different_media_items_is_fine() -> None:
    ids, cents = _persons()
    faces = samples(np.random.default_rng(4), cents[1], 2)
    chosen, _ = match_to_persons(faces, np.array([5, 6]), ids, cents, 0.5)
    assert chosen.tolist() == [20, 20]


def test_taken_media_item_person_pair_blocks_assignment() -> None:
    ids, cents = _persons()
    chosen, _ = match_to_persons(cents[[1, 1]], np.array([5, 6]), ids, cents, 0.5, taken={(5, 20)})
    assert chosen.tolist() == [NOISE, 20]


def test_match_without_persons_is_all_noise() -> None:
    faces = centres(np.random.default_rng(0), 2)
    chosen, _ = match_to_persons(
        faces, np.array([1, 2]), np.zeros(0, np.int64), np.zeros((0, DIM), np.float32), 0.5
    )
    assert chosen.tolist() == [NOISE, NOISE]
