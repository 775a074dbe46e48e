"""The kNN graph, the clusterings on it, and the membership rule."""

import numpy as np
import pytest

from face_assets.core.clustering import graph as graph_module
from face_assets.core.clustering.cluster import ClusterParams, cluster_embeddings, exact_average_linkage
from face_assets.core.clustering.graph import KnnGraph, graph_average_linkage, knn_graph, subgraph
from face_assets.core.clustering.membership import Rule, join, one_per_media_item, pair_keys, trim
from face_assets_tests.core_tests.synthetic import SIGMA, centres, identities, samples, unit


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(((a[:, None] == a[None, :]) == (b[:, None] == b[None, :])).all())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.2, 0.35, 0.5])
def test_average_linkage_on_a_complete_graph_is_exact_average_linkage(seed: int, threshold: float) -> None:
    """With every pair a candidate, the graph version must give scipy's tree, cut the same way."""
    rng = np.random.default_rng(seed)
    vectors, _ = identities(seed, k=8, n=6)
    # Uneven spreads, so that merges happen at many different heights.
    vectors = unit(
        vectors + rng.normal(scale=0.03, size=vectors.shape) * rng.uniform(0, 2, (len(vectors), 1))
    )
    complete = knn_graph(vectors, len(vectors) - 1)
    labels = graph_average_linkage(vectors, complete, threshold)
    assert _same_partition(labels, exact_average_linkage(vectors, threshold))


def test_exact_neighbours_are_the_most_similar_faces_in_order() -> None:
    vectors, _ = identities(3, k=10, n=5)
    graph = knn_graph(vectors, 7)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    expected = np.argsort(-similarity, axis=1)[:, :7]
    np.testing.assert_array_equal(np.sort(graph.neighbours, axis=1), np.sort(expected, axis=1))
    assert (np.diff(graph.similarities, axis=1) <= 1e-6).all()
    assert graph.method == "exact"


def test_the_index_finds_a_faces_own_person(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above EXACT_KNN_MAX faces the cells answer: the neighbours that matter, a face's other
    photos, must be found (a stranger's place among the rest matters little)."""
    vectors, truth = identities(4, k=300, n=10)
    monkeypatch.setattr(graph_module, "EXACT_KNN_MAX", 100)
    approximate = knn_graph(vectors, 10)
    assert approximate.method == "cells"
    same = truth[np.maximum(approximate.neighbours, 0)] == truth[:, None]
    assert same[:, :9].mean() >= 0.98  # 9 other photos of the same person, found first
    assert not (approximate.neighbours == np.arange(len(vectors))[:, None]).any()  # never itself
    exact = knn_graph(vectors, 10)
    np.testing.assert_allclose(
        np.sort(approximate.similarities[:, :9], axis=1),
        np.sort(exact.similarities[:, :9], axis=1),
        atol=1e-5,
    )


def _one_person_in_most_faces(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A library of one family: one tight person holds 1 200 of the 1 700 faces, 25 others 12
    each, 200 strangers once: the person fills a few cells far beyond the others."""
    rng = np.random.default_rng(seed)
    own = samples(rng, centres(rng, 1)[0], 1200, sigma=SIGMA / 2)
    others, truth = identities(seed + 1, k=25, n=12)
    strangers = unit(rng.normal(size=(200, own.shape[1])))
    vectors = np.vstack([own, others, strangers])
    labels = np.concatenate([np.zeros(len(own), dtype=np.int64), truth + 1, np.arange(200) + 26])
    order = rng.permutation(len(vectors))
    return vectors[order], labels[order]


def _same_neighbours(a: KnnGraph, b: KnnGraph) -> None:
    """The same neighbours with the same similarities, but for ties: a product cut otherwise may
    round a similarity one unit in the last place apart (0.8977275 or 0.8977277), so that of two
    faces equally near the k-th place either may be kept."""
    np.testing.assert_allclose(a.similarities, b.similarities, atol=1e-6)
    last = np.minimum(a.similarities[:, -1], b.similarities[:, -1])
    for row in np.flatnonzero((np.sort(a.neighbours, axis=1) != np.sort(b.neighbours, axis=1)).any(axis=1)):
        apart = np.setxor1d(a.neighbours[row], b.neighbours[row])
        kept = np.concatenate([a.similarities[row], b.similarities[row]])
        ends = np.concatenate([a.neighbours[row], b.neighbours[row]])
        assert (kept[np.isin(ends, apart)] <= last[row] + 1e-6).all(), f"row {row}: {apart} are not ties"


@pytest.mark.parametrize("seed", [0, 1])
def test_a_cells_products_in_small_blocks_find_the_same_neighbours(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """The products of a large cell are made in blocks of at most WORK similarities: with WORK
    tiny (blocks of 24 x 24), every cell is cut in rows and columns, and the neighbours must be
    those found with the whole cell at once, never the face itself, and no block larger."""
    import faiss

    vectors, _ = _one_person_in_most_faces(seed)
    monkeypatch.setattr(graph_module, "EXACT_KNN_MAX", 100)
    whole = knn_graph(vectors, 10)
    assert whole.method == "cells"
    blocks: list[int] = []

    class Heaps(faiss.float_minheap_array_t):  # type: ignore[misc]
        def addn(self, columns, block, first, top, rows):  # type: ignore[no-untyped-def]
            blocks.append(columns * rows)
            return super().addn(columns, block, first, top, rows)

    monkeypatch.setattr(faiss, "float_minheap_array_t", Heaps)
    monkeypatch.setattr(graph_module, "WORK", 24 * vectors.shape[1])
    blocked = knn_graph(vectors, 10)
    assert len(blocks) > 10 * len(vectors) // 24 and max(blocks) <= 24 * 24
    _same_neighbours(blocked, whole)
    assert not (blocked.neighbours == np.arange(len(vectors))[:, None]).any()
    assert (blocked.neighbours >= 0).all()


def test_cells_that_see_every_cell_find_the_exact_neighbours(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every cell probed, the candidates are all faces: the cells, in small blocks, must
    find exactly the exhaustive search's neighbours, the large person's faces included (a face's
    own place among its cell's candidates is where it is left out)."""
    vectors, labels = _one_person_in_most_faces(2)
    exact = knn_graph(vectors, 12)
    monkeypatch.setattr(graph_module, "EXACT_KNN_MAX", 100)
    monkeypatch.setattr(graph_module, "PROBE", 10_000)
    monkeypatch.setattr(graph_module, "WORK", 40 * vectors.shape[1])
    cells = knn_graph(vectors, 12)
    assert cells.method == "cells" and exact.method == "exact"
    _same_neighbours(cells, exact)
    assert (labels[cells.neighbours[labels == 0]] == 0).all()


def test_a_subgraph_keeps_only_edges_among_its_rows() -> None:
    vectors, _ = identities(5, k=4, n=5)
    graph = knn_graph(vectors, 6)
    rows = np.array([0, 1, 2, 3, 4, 10, 11])
    part = subgraph(graph, rows)
    assert part.neighbours.shape == (len(rows), 6)
    for i, row in enumerate(rows):
        kept = {int(rows[j]) for j in part.neighbours[i] if j >= 0}
        assert kept == {int(n) for n in graph.neighbours[row] if n in set(rows.tolist())}


@pytest.mark.parametrize("algorithm", ["hdbscan", "agglomerative", "dbscan"])
def test_one_person_alone_is_one_cluster(algorithm: str) -> None:
    """What is left for clustering is often one new person: it must not fall apart."""
    vectors, _ = identities(6, k=1, n=12)
    labels = cluster_embeddings(vectors, ClusterParams(algorithm=algorithm))  # type: ignore[arg-type]
    assert set(labels.tolist()) == {0}


def _two_persons_and_a_stranger() -> tuple[np.ndarray, KnnGraph, np.ndarray]:
    """Person 0 (8 faces), person 1 (8 faces), and a stranger with two photos of his own who
    resembles person 0."""
    rng = np.random.default_rng(9)
    vectors, truth = identities(9, k=2, n=8)
    own = unit(vectors[truth == 0].mean(axis=0) + rng.normal(scale=0.045, size=vectors.shape[1]))
    stranger = samples(rng, own, 2, sigma=0.01)
    vectors = np.vstack([vectors, stranger])
    labels = np.concatenate([truth, [-1, -1]])
    return vectors, knn_graph(vectors, 6), labels


def test_a_look_alike_whose_nearest_faces_are_elsewhere_does_not_join() -> None:
    vectors, graph, labels = _two_persons_and_a_stranger()
    centroid = unit(vectors[labels == 0].sum(axis=0))
    similarity = float(vectors[16] @ centroid)
    # Similar enough for the lower threshold, not for the upper one.
    rule = Rule(match_threshold=similarity + 0.05, vote_threshold=similarity - 0.2, vote_neighbours=3)
    out = join(vectors, labels, labels < 0, np.arange(len(labels)), graph, rule)
    assert out[16] == -1 and out[17] == -1  # his nearest faces are each other: he waits
    strict = Rule(match_threshold=similarity - 0.05, vote_threshold=similarity - 0.2, vote_neighbours=3)
    assert join(vectors, labels, labels < 0, np.arange(len(labels)), graph, strict)[16] == 0


def test_a_hard_photo_among_its_persons_faces_stays() -> None:
    """A member below the upper threshold stays while its nearest faces are its person's."""
    vectors, truth = identities(10, k=2, n=10)
    graph = knn_graph(vectors, 5)
    everyone = np.ones(len(vectors), dtype=bool)
    lenient = Rule(match_threshold=0.99, vote_threshold=0.0, vote_neighbours=3)
    np.testing.assert_array_equal(trim(vectors, truth, everyone, graph, lenient), truth)
    harsh = Rule(match_threshold=0.99, vote_threshold=0.99, vote_neighbours=3)
    # Nobody passes: members leave one by one, to the last one of each person.
    assert (trim(vectors, truth, everyone, graph, harsh) == -1).sum() == len(vectors) - 2


def test_intruders_leave_and_the_members_they_pulled_away_stay() -> None:
    """Members fail while intruders drag the mean away; the least similar leaves first, so once
    the intruders are gone the members pass again and stay."""
    rng = np.random.default_rng(3)
    own, other = unit(rng.normal(size=(2, 512)))
    members, intruders = samples(rng, own, 6, sigma=0.03), samples(rng, other, 4, sigma=0.01)
    vectors = np.vstack([members, intruders])
    labels = np.zeros(len(vectors), dtype=np.int64)
    graph = knn_graph(vectors, 4)
    rule = Rule(match_threshold=0.7, vote_threshold=0.7, vote_neighbours=1)
    everyone = np.ones(len(vectors), dtype=bool)
    left_out = (vectors.sum(axis=0) - members) @ members.T
    assert (np.diag(left_out) / np.linalg.norm(vectors.sum(axis=0) - members, axis=1) < 0.7).all()
    out = trim(vectors, labels, everyone, graph, rule)
    np.testing.assert_array_equal(out, [0] * 6 + [-1] * 4)


def test_two_faces_of_one_media_item_never_take_one_person() -> None:
    chosen = np.array([5, 5, 5, 7])
    similarity = np.array([0.6, 0.9, 0.8, 0.7], dtype=np.float32)
    media = np.array([1, 1, 2, 2])
    taken = pair_keys(np.array([2]), np.array([7]))  # person 7 is already in media item 2
    np.testing.assert_array_equal(one_per_media_item(chosen, similarity, media, taken), [-1, 5, 5, -1])


def _every_face_every_round(vectors, labels, first_new, movable, items, graph, rule, merge, min_size, pairs):  # type: ignore[no-untyped-def]
    """The rule to a fixed point looking at every face in every round: what fixed_point must equal."""
    from face_assets.core.clustering.membership import NOISE, merge_similar, too_small

    for _ in range(100):
        start = labels
        labels = merge_similar(vectors, labels, first_new, graph, merge, media_item_ids=items)
        labels = trim(vectors, labels, movable, graph, rule, partners=pairs)
        new = labels >= first_new
        size = int(max(labels.max(), 0)) + 1
        small = too_small(np.where(new, labels, NOISE), np.ones(len(labels), np.int64), min_size, size, pairs)
        labels = np.where(new & small[np.maximum(labels, 0)], NOISE, labels)
        labels = join(vectors, labels, movable, items, graph, rule)
        if np.array_equal(start, labels):
            return labels
    raise AssertionError("no fixed point")


@pytest.mark.parametrize("evidence", ["mean and vote", "split clause, pairs, slack and link"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_looking_again_only_at_what_moved_reaches_the_same_fixed_point(
    seed: int, evidence: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Persons of many sizes, look-alikes and strangers, several faces per media item, rough
    starting groups: the incremental loop ends exactly where looking at everything ends."""
    from face_assets.core.clustering import membership
    from face_assets.core.clustering.membership import Merge, fixed_point, partners

    rng = np.random.default_rng(seed)
    vectors, truth = identities(seed, k=6, n=60)  # large persons: most members are not neighbours
    vectors = unit(
        vectors + rng.normal(scale=0.04, size=vectors.shape) * rng.uniform(0, 2, (len(vectors), 1))
    )
    strangers = unit(rng.normal(size=(40, vectors.shape[1])))
    vectors = np.vstack([vectors, strangers])
    graph = knn_graph(vectors, 4)
    # Rough groups: identities split in two, some pieces fused, many faces left out.
    labels = np.concatenate([truth * 2 + (np.arange(len(truth)) % 2), np.full(len(strangers), -1)])
    labels = np.where(labels == 11, 0, labels).astype(np.int64)
    labels[rng.random(len(labels)) < 0.3] = -1
    existing = 3  # labels 0..2 are persons already: they never merge or dissolve
    items = rng.integers(0, len(vectors) // 3, size=len(vectors))  # often two faces of one item
    movable = rng.random(len(vectors)) < 0.9
    rule = Rule(match_threshold=0.75, vote_threshold=0.5, vote_neighbours=2)
    merge, pairs = Merge(0.8), None
    if evidence != "mean and vote":
        merge, pairs = Merge(0.8, 0.6, 1.0, link=0.3), partners(graph, items, 0.6)
        rule = Rule(match_threshold=0.75, vote_threshold=0.5, vote_neighbours=2, vote_slack=0.1)
        monkeypatch.setattr(membership, "SPREAD_KNOWN", 10)  # the pieces here hold 15 to 40 faces
    expected = _every_face_every_round(
        vectors, labels, existing, movable, items, graph, rule, merge, 3, pairs
    )
    got = fixed_point(vectors, labels, existing, movable, items, graph, rule, merge, 3, partners=pairs)
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, labels)  # the case moved faces
    if evidence != "mean and vote":  # and the slack and the link had a say in it
        loose = Rule(match_threshold=0.75, vote_threshold=0.5, vote_neighbours=2)
        other = fixed_point(
            vectors, labels, existing, movable, items, graph, loose, Merge(0.8, 0.6, 1.0), 3, partners=pairs
        )
        assert not np.array_equal(got, other)
