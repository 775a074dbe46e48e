"""The evidence beyond dense groups: a person seen twice (a pair), and pieces of one person that
are mutual neighbours."""

from typing import Any

import numpy as np
import pytest

from face_assets.core.clustering.cluster import NOISE, ClusterParams, cluster_embeddings
from face_assets.core.clustering.graph import KnnGraph, knn_graph
from face_assets.core.clustering.membership import Merge, merge_similar, partners
from face_assets.core.person import plan_persons
from face_assets_tests.core_tests.synthetic import DIM, centres, identities, samples, unit


def _people_seen_twice(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten people with five photos, eight people with two, forty strangers seen once."""
    rng = np.random.default_rng(seed + 1000)  # other centres than identities' own
    often, truth = identities(seed, k=10, n=5)
    twice = np.vstack([samples(rng, c, 2, sigma=0.025) for c in centres(rng, 8)])
    strangers = centres(rng, 40)
    vectors = np.vstack([often, twice, strangers])
    return vectors, np.concatenate([truth, 100 + np.repeat(np.arange(8), 2), 200 + np.arange(40)])


@pytest.mark.parametrize("seed", [0, 1])
def test_two_photos_that_are_each_others_nearest_face_are_a_person(seed: int) -> None:
    """A person seen twice is a person, while min_cluster_size holds for everything else: each
    pair its own person, no stranger in it, strangers seen once left waiting."""
    vectors, truth = _people_seen_twice(seed)
    labels = cluster_embeddings(vectors, ClusterParams())
    for person in range(8):
        rows = np.flatnonzero(truth == 100 + person)
        assert labels[rows[0]] >= 0 and labels[rows[0]] == labels[rows[1]]
        assert (labels == labels[rows[0]]).sum() == 2
    assert (labels[truth >= 200] == NOISE).all()
    off = cluster_embeddings(vectors, ClusterParams(pair_threshold=1.0))
    assert (off[truth >= 100] == NOISE).all()


def test_a_pair_below_its_threshold_or_in_one_photo_is_no_person() -> None:
    """Two faces of one photo are never one person, however alike; nor are two faces less
    similar than pair_threshold."""
    vectors, truth = _people_seen_twice(0)
    pair = np.flatnonzero(truth == 100)
    similarity = float(vectors[pair[0]] @ vectors[pair[1]])
    media = np.arange(len(vectors), dtype=np.int64)
    media[pair[1]] = media[pair[0]]
    count = len(vectors)
    _, groups, _ = plan_persons(media, np.full(count, -1), np.zeros(count, bool), vectors, ClusterParams())
    assert not any(set(pair) <= set(g.tolist()) for g in groups)
    strict = ClusterParams(pair_threshold=min(1.0, similarity + 0.01))
    labels = cluster_embeddings(vectors, strict)
    assert labels[pair[0]] == NOISE and labels[pair[1]] == NOISE
    graph = knn_graph(vectors, 30)
    found = partners(graph, np.arange(count), 0.5)
    assert found[pair[0]] == pair[1] and found[pair[1]] == pair[0]
    assert (found[truth >= 200] == NOISE).all()  # a stranger's nearest face is not his


def _two_pieces(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One person whose photos vary (faces 0.3 alike) in two interleaved pieces of 6 faces,
    every face's nearest faces in both; and two look-alikes (centres 0.8 alike) of 12 faces
    each, every face's nearest faces its own."""
    rng = np.random.default_rng(seed + 1000)
    person = samples(rng, centres(rng, 1)[0], 12, sigma=float(np.sqrt((1 / 0.3 - 1) / DIM)))
    base = centres(rng, 1)[0]
    twin = unit(0.8 * base + 0.6 * centres(rng, 1)[0])
    alike = np.vstack([samples(rng, base, 12, sigma=0.02), samples(rng, twin, 12, sigma=0.02)])
    vectors = np.vstack([person, alike])
    labels = np.r_[np.tile([0, 1], 6), np.full(12, 2), np.full(12, 3)].astype(np.int64)
    return vectors, labels


@pytest.mark.parametrize("seed", [0, 1])
def test_pieces_of_one_person_that_are_mutual_neighbours_become_one(seed: int) -> None:
    """Pieces whose faces are each other's nearest merge at split_threshold; look-alikes whose
    means are as alike, each face among its own, stay two; and without the clause (split 1)
    neither merges."""
    vectors, labels = _two_pieces(seed)
    graph = knn_graph(vectors, 10)
    means = [unit(vectors[labels == g].sum(axis=0)) for g in range(4)]
    pieces, twins = float(means[0] @ means[1]), float(means[2] @ means[3])
    assert twins > pieces  # the look-alikes' means are the more alike: the links decide
    merge = Merge(threshold=0.99, split_threshold=min(pieces, twins) - 0.05, split_links=1.0)
    merged = merge_similar(vectors, labels, 0, graph, merge)
    assert len(set(merged[labels <= 1].tolist())) == 1
    assert merged[12] != merged[24]
    unchanged = merge_similar(vectors, labels, 0, graph, Merge(0.99, 1.0, 1.0))
    np.testing.assert_array_equal(unchanged, labels)
    media = np.arange(len(vectors), dtype=np.int64)
    media[1] = media[0]  # a photo with a face in each piece: never one person
    kept = merge_similar(vectors, labels, 0, graph, merge, media_item_ids=media)
    assert kept[0] != kept[1]


@pytest.mark.parametrize(
    "changes",
    [
        {"pair_threshold": 0.45},  # below vote_threshold: a pair would fail its own rule
        {"split_links": -1.0},
    ],
)
def test_the_new_knobs_refuse_what_contradicts_the_rule(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ClusterParams(**changes)


def test_alike_groups_merge_pair_by_pair_never_in_a_chain() -> None:
    """A like B and B like C is no reason for A and C: B joins the one it is most like, and the
    merged group is compared with C anew (the first clustering of a million faces chained
    persons of thousands of faces this way)."""
    rng = np.random.default_rng(0)
    first, second = centres(rng, 2)
    second = unit(second - (second @ first) * first)  # a direction at right angles to the first
    angles = np.radians([0.0, 31.0, 64.0])  # A-B 31 degrees (cosine 0.86), B-C 33 (0.84), A-C 64 (0.44)
    means = unit(np.cos(angles)[:, None] * first + np.sin(angles)[:, None] * second)
    vectors = np.vstack([samples(rng, m, 5, sigma=0.005) for m in means])
    labels = np.repeat(np.arange(3), 5).astype(np.int64)
    graph = knn_graph(vectors, 14)  # every face a neighbour of every other
    merged = labels
    for _ in range(5):
        merged = merge_similar(vectors, merged, 0, graph, Merge(0.8))
    assert merged[0] == merged[5] != merged[10]


def _loose_groups(seed: int, faces: int = 40) -> np.ndarray:
    """Two groups of different people whose faces lean the same way (a direction every face
    shares, as the library's average face) and vary a lot besides: their means are more than
    0.8 alike, their faces on average less than 0.5."""
    rng = np.random.default_rng(seed + 2000)
    shared, first, second = centres(rng, 3)
    lean, noise = 2.4, float(np.sqrt(6.0 / DIM))
    return np.vstack(
        [
            unit(lean * shared + first + rng.normal(scale=noise, size=(faces, DIM))),
            unit(lean * shared + second + rng.normal(scale=noise, size=(faces, DIM))),
        ]
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_loose_groups_whose_means_are_alike_but_faces_are_not_stay_apart(seed: int) -> None:
    """Means of loose groups lean towards the average face, so two of them look alike whoever
    is in them (at a million faces such merges made persons of 15 000 faces from hundreds of
    people); their faces' mean similarity (average linkage) does not, and a person split in two
    tight pieces still merges."""
    vectors = _loose_groups(seed)
    labels = np.repeat([0, 1], len(vectors) // 2).astype(np.int64)
    graph = knn_graph(vectors, 10)
    a, b = (vectors[labels == g].sum(axis=0) for g in (0, 1))
    assert float(unit(a) @ unit(b)) > 0.8 > 0.5 > float(a @ b) / (len(vectors) // 2) ** 2
    merged = merge_similar(vectors, labels, 0, graph, Merge(0.8))
    assert merged[0] == merged[-1]  # the means alone merge them
    kept = merge_similar(vectors, labels, 0, graph, Merge(0.8, link=0.5))
    np.testing.assert_array_equal(kept, labels)
    rng = np.random.default_rng(seed)
    pieces = samples(rng, centres(rng, 1)[0], 20, sigma=0.02)
    joined = merge_similar(
        pieces, np.repeat([0, 1], 10).astype(np.int64), 0, knn_graph(pieces, 10), Merge(0.8, link=0.5)
    )
    assert len(set(joined.tolist())) == 1


@pytest.mark.parametrize("members", [60, 20])
def test_a_face_far_below_a_large_persons_own_spread_does_not_join_it_by_the_vote(members: int) -> None:
    """A stranger whose nearest faces are all a large person's, at 0.6 to its mean (above the
    vote's 0.5), while that person's own faces sit at about 0.9: at library scale such faces
    are mostly strangers. The slack refuses it for a person of SPREAD_KNOWN faces or more; a
    smaller person's spread is unknown and the vote takes the face, as without slack."""
    from face_assets.core.clustering.membership import SPREAD_KNOWN, Rule, join

    rng = np.random.default_rng(3)
    centre, aside = centres(rng, 2)
    aside = unit(aside - (aside @ centre) * centre)
    person = samples(rng, centre, members, sigma=0.015)
    stranger = unit(0.6 * centre + 0.8 * aside)[None, :]
    vectors = np.vstack([person, stranger, centres(rng, 20)])
    labels = np.r_[np.zeros(members), np.full(21, NOISE)].astype(np.int64)
    waiting = labels == NOISE
    media = np.arange(len(vectors), dtype=np.int64)
    graph = knn_graph(vectors, 5)
    assert set(labels[graph.neighbours[members, :2]].tolist()) == {0}
    slack = Rule(match_threshold=0.7, vote_threshold=0.5, vote_neighbours=2, vote_slack=0.25)
    without = Rule(match_threshold=0.7, vote_threshold=0.5, vote_neighbours=2)
    joined = join(vectors, labels, waiting, media, graph, slack)[members]
    assert joined == (NOISE if members >= SPREAD_KNOWN else 0)
    assert join(vectors, labels, waiting, media, graph, without)[members] == 0


def test_an_override_that_names_no_knob_is_refused() -> None:
    """A misspelt knob (a benchmark's --knobs, a script's overrides) must not pass unnoticed
    with the default in its place."""
    from face_assets.core.clustering.params import with_overrides

    with pytest.raises(ValueError, match="vote_slak"):
        with_overrides(ClusterParams(), {"vote_slak": 1.0})
    assert with_overrides(ClusterParams(), {"vote_slack": "2"}).vote_slack == 2.0


@pytest.mark.parametrize("others", [200, 5_000])
def test_a_face_near_a_persons_mean_waits_when_the_library_has_many_persons(others: int) -> None:
    """A stranger is compared with every person, so a library of many persons must ask more of
    a face that joins on its mean alone. A face at 0.73 to a person's mean (above the 0.7 of a
    library of PERSONS_KNOWN persons, below the 0.74 of five times as many), whose nearest faces
    do not all vote for that person, joins it beside 200 other persons and waits beside 5 000."""
    from face_assets.core.clustering.params import PERSONS_KNOWN

    rng = np.random.default_rng(5)
    centre, aside = centres(rng, 2)
    aside = unit(aside - (aside @ centre) * centre)
    person = samples(rng, centre, 20, sigma=0.01)
    face = unit(0.73 * centre + np.sqrt(1 - 0.73**2) * aside)[None, :]
    vectors = np.vstack([person, face, centres(rng, others)])  # one face each: the other persons
    assigned = np.r_[np.zeros(20), NOISE, np.arange(1, others + 1)].astype(np.int64)
    media = np.arange(len(vectors), dtype=np.int64)
    # 25 voters: more than the person has, so only its mean can take the face.
    params = ClusterParams(vote_neighbours=25)
    person_of_face = plan_persons(media, assigned, np.zeros(len(vectors), bool), vectors, params)[0][20]
    assert params.match_threshold < 0.73 < params.match_threshold_for(5 * PERSONS_KNOWN)
    assert person_of_face == (0 if others < PERSONS_KNOWN else NOISE)
    unrisen = ClusterParams(vote_neighbours=25, match_rise=0.0)
    assert plan_persons(media, assigned, np.zeros(len(vectors), bool), vectors, unrisen)[0][20] == 0


def test_the_match_threshold_rises_with_every_tenfold_of_persons_and_never_past_one() -> None:
    from face_assets.core.clustering.params import PERSONS_KNOWN

    params = ClusterParams()
    assert (
        params.match_threshold_for(0) == params.match_threshold_for(PERSONS_KNOWN) == params.match_threshold
    )
    assert params.match_threshold_for(100 * PERSONS_KNOWN) == pytest.approx(
        params.match_threshold + 2 * params.match_rise
    )
    assert ClusterParams(match_rise=0.2).match_threshold_for(10**12) == 1.0


@pytest.mark.parametrize("members", [8, 60])
def test_two_photos_of_a_stranger_side_by_side_in_a_person_do_not_vote_each_other_in(members: int) -> None:
    """A stranger seen twice: his two photos are each other's nearest face (partners), 0.55 to
    0.63 to a person's mean (between the vote's 0.5 and the match's 0.7), next to one of its
    faces and, third, to someone else. Clustering put them in the person; each one's two
    voters are the other photo and that face. Without partner_votes (the default), in a person
    of fewer than SPREAD_KNOWN faces a partner is no vote for: the third nearest face decides,
    and it is elsewhere, so both leave while the person's own faces stay; with partner_votes
    they stay in. In a larger person the partner votes either way (its spread guards its edge,
    vote_slack, here turned off to show it)."""
    from face_assets.core.clustering.membership import SPREAD_KNOWN, trim

    rng = np.random.default_rng(5)
    centre, aside, other = centres(rng, 3)
    aside = unit(aside - (aside @ centre) * centre)
    person = samples(rng, centre, members, sigma=0.02)
    bridge = unit(0.8 * centre + 0.6 * aside)[None, :]  # the person's face nearest the stranger
    stranger = samples(rng, unit(0.53 * centre + 0.848 * aside), 2, sigma=0.01)
    loner = unit(0.7 * aside + 0.714 * other)[None, :]  # someone else, waiting
    vectors = np.vstack([person, bridge, stranger, loner])
    inside = members + 3
    labels = np.r_[np.zeros(inside), NOISE].astype(np.int64)
    graph = knn_graph(vectors, 5)
    first, second = members + 1, members + 2
    pairs = partners(graph, np.arange(len(vectors)), ClusterParams().pair_threshold)
    assert pairs[first] == second and pairs[second] == first
    assert graph.neighbours[first, :3].tolist() == [second, members, inside]
    rest = vectors[:inside].sum(axis=0) - vectors[first]
    assert 0.5 < float(vectors[first] @ rest / np.linalg.norm(rest)) < 0.7
    movable = np.ones(len(vectors), dtype=bool)
    assert not ClusterParams().partner_votes
    strict = ClusterParams(vote_slack=2.0).rule()
    kept = trim(vectors, labels, movable, graph, strict, partners=pairs)
    assert kept[: members + 1].tolist() == [0] * (members + 1)
    left = kept[first] == kept[second] == NOISE
    assert left == (members + 3 < SPREAD_KNOWN)
    voting = ClusterParams(vote_slack=2.0, partner_votes=True).rule()
    assert trim(vectors, labels, movable, graph, voting, partners=pairs)[:inside].tolist() == [0] * inside


@pytest.mark.parametrize("size", [4, 5])
def test_a_small_person_of_varied_photos_keeps_its_pairs(size: int) -> None:
    """A person of a face, its partner and two more (a man's photos of two periods, two of
    each): the face is 0.6 to the person's mean and its voters are its partner and one of the
    person's faces, while its third nearest face is someone else's. Were the partner no vote,
    the face would leave, then its partner with one voter fewer, and the person break up; so
    in a person of the face, its voters and one more, the partner votes. From one face more
    on, the third nearest face decides, as it does for a stranger's two photos."""
    outside = size  # the last row: someone else's face, waiting
    labels = np.r_[np.zeros(size), NOISE].astype(np.int64)
    neighbours = np.full((size + 1, 3), -1, dtype=np.int64)
    neighbours[0] = [1, 2, outside]
    graph = KnnGraph(neighbours, np.zeros(neighbours.shape, np.float32), 0.0, "given")
    pairs = np.full(size + 1, -1, dtype=np.int64)
    pairs[[0, 1]] = [1, 0]
    rule = ClusterParams().rule()
    rows = np.array([0])
    similarity = np.array([0.6], dtype=np.float32)
    accepted = rule.accepts(graph, rows, labels, np.array([0]), similarity, None, pairs, np.array([size - 1]))
    assert bool(accepted[0]) == (size == 4)
    neighbours[0, 2] = 3  # the third nearest face in the person: accepted whatever its size
    assert rule.accepts(graph, rows, labels, np.array([0]), similarity, None, pairs, np.array([size - 1]))[0]
