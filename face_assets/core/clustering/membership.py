"""Who belongs to which person: one rule for faces joining a person and for members of a new group.

A face belongs to person P when its cosine similarity to P's mean (leaving the face itself out)
reaches `match_threshold`, or reaches `vote_threshold` while its `vote_neighbours` nearest
faces all belong to P as well. The second clause keeps the hard photos of a person (profile,
poor light) that are still surrounded by that person's faces, and turns away a stranger whose
nearest faces are elsewhere — typically his own few photos, waiting; two of his photos that
are each other's nearest face (partners) and sit side by side in a person of fewer than
SPREAD_KNOWN faces vote each other in only with `partner_votes`. For a person of
SPREAD_KNOWN faces or more, whose spread is known, the second clause also asks the face to be
no more than `vote_slack` below the person's typical similarity (its faces' mean similarity to
their mean): in a large library, strangers at the edge of a large person outnumber its members
there. Candidates come from the kNN graph (the persons of a face's neighbours), so a round
costs O(n k d) at any library size.

New persons come from groups of faces (clustering), from two faces that are each other's
nearest (`partners`), and from groups that are pieces of one person (`Merge`). Two faces of
one media item never go to the same person.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from face_assets.core.clustering.graph import KnnGraph
from face_assets.core.clustering.vectors import NOISE, l2_normalize

_CHUNK = 4096
MAX_ROUNDS = 30


def group_sums(labels: NDArray[np.int64], vectors: NDArray[np.float32], count: int) -> NDArray[np.float32]:
    """Sum of the rows of each label 0..count-1 (rows labelled -1 ignored): (count, n_dims)."""
    from scipy import sparse

    rows = np.flatnonzero(labels >= 0)
    indicator = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (labels[rows], rows)), shape=(count, len(labels))
    )
    return np.asarray(indicator @ vectors, dtype=np.float32)


def sums_of(
    labels: NDArray[np.int64], vectors: NDArray[np.float32], ids: NDArray[np.int64]
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Sum of the rows of each label in `ids` (sorted, unique): (len(ids), n_dims), and how many
    rows each has. Only those labels' rows are read, so a late round that touched a few persons
    reads a few."""
    rows = np.flatnonzero(np.isin(labels, ids))
    dense = np.searchsorted(ids, labels[rows])
    return group_sums(dense, vectors[rows], len(ids)), np.bincount(dense, minlength=len(ids))


def one_per_media_item(
    chosen: NDArray[np.int64],
    similarity: NDArray[np.float32],
    media_item_ids: NDArray[np.int64],
    taken: NDArray[np.int64],
) -> NDArray[np.int64]:
    """`chosen` with clashes removed: a person already in the media item (`taken`, keys from
    `pair_keys`) is refused, and of two faces of one item choosing one person the more similar
    one keeps it."""
    out = np.full(len(chosen), NOISE, dtype=np.int64)
    rows = np.flatnonzero(chosen >= 0)
    if not len(rows):
        return out
    keys = pair_keys(media_item_ids[rows], chosen[rows])
    order = np.argsort(-similarity[rows], kind="stable")
    _, first = np.unique(keys[order], return_index=True)
    winners = rows[order[first]]
    winners = winners[~np.isin(pair_keys(media_item_ids[winners], chosen[winners]), taken)]
    out[winners] = chosen[winners]
    return out


def enough_for_a_person(weights: ArrayLike, min_size: int) -> NDArray[np.bool_]:
    """The evidence a new person needs, the same in every clustering (a library's first, an
    incremental one, a rebuild): faces weighing `min_size` in all, where a photo's face weighs
    1 and a video track its faces up to `min_size` (track.collapse_tracks). So `min_size`
    photos of one person may start that person, and so may one track of `min_size` faces that
    is the person's only appearance; fewer wait for more. Elementwise over `weights` (a
    group's total, or each row's own for a row that would start a person alone)."""
    return np.asarray(weights) >= min_size


def partners(graph: KnnGraph, media_item_ids: NDArray[np.int64], threshold: float) -> NDArray[np.int64]:
    """Each row's partner, -1 for none: the row that is its nearest face while it is that row's
    nearest face, in another media item, with cosine similarity at least `threshold`. Two photos
    of someone seen twice are each other's nearest face; a stranger's nearest face is someone
    whose own nearest face is another photo of himself."""
    count = len(graph.neighbours)
    if not count or not graph.neighbours.shape[1]:
        return np.full(count, NOISE, dtype=np.int64)
    first = graph.neighbours[:, 0]
    near = (first >= 0) & (graph.similarities[:, 0] >= threshold)
    back = np.where(near, graph.neighbours[np.maximum(first, 0), 0], NOISE)
    mutual = near & (back == np.arange(count)) & (media_item_ids[np.maximum(first, 0)] != media_item_ids)
    return np.where(mutual, first, NOISE).astype(np.int64)


def paired(labels: NDArray[np.int64], partners: NDArray[np.int64] | None, size: int) -> NDArray[np.bool_]:
    """Which of the labels 0..size-1 hold both faces of a pair (`partners`)."""
    out = np.zeros(size, dtype=bool)
    if partners is None:
        return out
    rows = np.flatnonzero((partners >= 0) & (labels >= 0))
    both = labels[partners[rows]] == labels[rows]
    out[labels[rows[both]]] = True
    return out


def too_small(
    labels: NDArray[np.int64],
    weights: NDArray[np.int64],
    min_size: int,
    size: int,
    partners: NDArray[np.int64] | None = None,
) -> NDArray[np.bool_]:
    """Which of the labels 0..size-1 are too little evidence for a person: weighing less than
    `min_size` (enough_for_a_person) and not holding a pair."""
    inside = labels >= 0
    sizes = np.bincount(labels[inside], weights=weights[inside], minlength=size)
    return ~enough_for_a_person(sizes, min_size) & ~paired(labels, partners, size)


def pair_keys(media_item_ids: NDArray[np.int64], person_ids: NDArray[np.int64]) -> NDArray[np.int64]:
    """One int64 per (media item, person) pair."""
    return media_item_ids.astype(np.int64) * (1 << 31) + person_ids.astype(np.int64)


# A person's typical similarity (the mean similarity of its faces to their mean) is known, for
# the vote's slack, from this many faces on; a smaller person's is too noisy to hold against.
SPREAD_KNOWN = 50


@dataclass(frozen=True)
class Rule:
    match_threshold: float
    vote_threshold: float
    vote_neighbours: int
    vote_slack: float = 2.0  # 2: no floor
    partner_votes: bool = True

    def accepts(
        self,
        graph: KnnGraph,
        rows: NDArray[np.int64],
        labels: NDArray[np.int64],
        person: NDArray[np.int64],
        similarity: NDArray[np.float32],
        typical: NDArray[np.float64] | None = None,
        partners: NDArray[np.int64] | None = None,
        others: NDArray[np.int64] | None = None,
    ) -> NDArray[np.bool_]:
        """Whether each row may be in its candidate `person` (`similarity`: to its mean;
        `typical`: the person's typical similarity, both without the row; NaN: not known;
        `others`: its faces without the row). A row's partner (`partners`, per face) among its
        voters votes against when elsewhere; in a person of fewer than SPREAD_KNOWN faces,
        without `partner_votes`, it is no vote for: the next nearest face must be in the person
        too (when the person has more faces than the row, its voters and one more)."""
        voters = self.vote_neighbours
        near = graph.neighbours[rows, : voters + 1]
        inside = np.where(near >= 0, labels[np.maximum(near, 0)] == person[:, None], False)
        votes = inside[:, :voters].all(axis=1)
        if partners is not None and not self.partner_votes and near.shape[1] > voters:
            # Two photos of a stranger are each other's nearest: side by side in a person, each
            # would vote the other in.
            partner = partners[rows]
            partner_votes = (near[:, :voters] == partner[:, None]).any(axis=1) & (partner >= 0)
            if others is not None:
                # In a person of the face, its voters and one more, all of them vote: a small
                # person of varied photos would otherwise break up as its faces leave one by
                # one. From SPREAD_KNOWN faces on, the slack below guards its edge.
                partner_votes &= (others > voters + 1) & (others < SPREAD_KNOWN)
            votes &= ~partner_votes | inside[:, voters]
        if typical is not None:
            votes &= ~(similarity < typical - self.vote_slack)  # NaN: no floor
        return (similarity >= self.match_threshold) | ((similarity >= self.vote_threshold) & votes)


def typical_similarity(norms: NDArray[np.float64], counts: NDArray[np.int64]) -> NDArray[np.float64]:
    """A person's typical similarity from its sum's norm and its faces, NaN below SPREAD_KNOWN:
    |sum| / n is the mean of its faces' similarities to the (unit) mean."""
    known = counts >= SPREAD_KNOWN
    return np.where(known, norms / np.maximum(counts, 1), np.nan)


def trim(
    vectors: NDArray[np.float32],
    labels: NDArray[np.int64],
    movable: NDArray[np.bool_],
    graph: KnnGraph,
    rule: Rule,
    active: NDArray[np.bool_] | None = None,
    partners: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]:
    """Members (rows with `movable`) that fail the rule against their own person, left out of
    it, are unassigned; the others stay, and so do the two faces of a pair (`partners`) that
    are a person on their own. Rows without `movable` never change; with `active`, only those
    rows are looked at (the others passed before and nothing they depend on moved)."""
    rows = np.flatnonzero(movable & (labels >= 0) & (True if active is None else active))
    if not len(rows):
        return labels
    ids = np.unique(labels[rows])
    sums, faces = sums_of(labels, vectors, ids)
    out = labels.copy()
    while len(rows):
        own = np.searchsorted(ids, out[rows])
        similarity, rest = _left_out_similarity(sums, vectors, own, rows)
        typical = typical_similarity(rest, faces[own] - 1)
        keep = rule.accepts(graph, rows, out, out[rows], similarity, typical, partners, faces[own] - 1)
        if partners is not None:  # a person of two faces that are a pair
            partner = partners[rows]
            together = (partner >= 0) & (out[np.maximum(partner, 0)] == out[rows])
            keep |= together & (faces[own] == 2)
        failing = rows[~keep]
        if not len(failing):
            break
        # The least similar failing members of each person leave first, one at a time, or a
        # tenth of them at a time when many fail (a group of two people at library scale): an
        # intruder's departure moves the mean, and members it pulled away from may then pass.
        # Only the members of persons that lost some are looked at again.
        order = np.lexsort((similarity[~keep], out[failing]))
        person_of = out[failing][order]
        starts = np.flatnonzero(np.r_[True, person_of[1:] != person_of[:-1]])
        counts = np.diff(np.r_[starts, len(order)])
        rank = np.arange(len(order)) - np.repeat(starts, counts)
        leaving = failing[order[rank < np.repeat(np.maximum(1, counts // 10), counts)]]
        persons = out[leaving]
        np.subtract.at(sums, np.searchsorted(ids, persons), vectors[leaving])
        np.subtract.at(faces, np.searchsorted(ids, persons), 1)
        out[leaving] = NOISE
        rows = rows[np.isin(out[rows], persons)]
    return out


def _left_out_similarity(
    sums: NDArray[np.float32], vectors: NDArray[np.float32], own: NDArray[np.int64], rows: NDArray[np.int64]
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Cosine similarity of each row to its person's mean without the row itself (1.0 for a
    person of one face: nothing to compare), and the norm of that person's sum without it."""
    persons = np.unique(own)
    norms2 = np.zeros(len(sums), dtype=np.float64)
    norms2[persons] = np.einsum("ij,ij->i", sums[persons], sums[persons], dtype=np.float64)
    similarities = np.ones(len(rows), dtype=np.float32)
    norms = np.zeros(len(rows), dtype=np.float64)
    for start in range(0, len(rows), _CHUNK):
        part, person = rows[start : start + _CHUNK], own[start : start + _CHUNK]
        dot = np.einsum("ij,ij->i", sums[person], vectors[part]).astype(np.float64)
        rest = np.maximum(norms2[person] - 2.0 * dot + 1.0, 0.0)  # |sum - v|^2 for a unit v
        similarity = (dot - 1.0) / np.sqrt(np.maximum(rest, 1e-12))
        similarities[start : start + len(part)] = np.where(rest < 1e-6, 1.0, similarity)
        norms[start : start + len(part)] = np.sqrt(rest)
    return similarities, norms


def join(
    vectors: NDArray[np.float32],
    labels: NDArray[np.int64],
    waiting: NDArray[np.bool_],
    media_item_ids: NDArray[np.int64],
    graph: KnnGraph,
    rule: Rule,
    active: NDArray[np.bool_] | None = None,
    partners: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]:
    """Unassigned rows with `waiting` join the person, among their neighbours' persons, whose
    mean is most similar, when the rule accepts it (with `active`, those rows only; `partners`
    as for the rule). Returns the new labels."""
    rows = np.flatnonzero(waiting & (labels == NOISE) & (True if active is None else active))
    if not len(rows) or not (labels >= 0).any():
        return labels
    near = graph.neighbours[rows]
    candidates = np.where(near >= 0, labels[np.maximum(near, 0)], NOISE)
    ids = np.unique(candidates[candidates >= 0])
    if not len(ids):
        return labels
    sums, counts = sums_of(labels, vectors, ids)
    centroids = l2_normalize(sums)
    chosen = np.full(len(rows), NOISE, dtype=np.int64)
    best = np.full(len(rows), -np.inf, dtype=np.float32)
    for start in range(0, len(rows), _CHUNK):
        part = rows[start : start + _CHUNK]
        near = candidates[start : start + _CHUNK]
        # Each (face, person) pair once: most of a face's neighbours share a few persons.
        at, column = np.nonzero(near >= 0)
        keys = np.unique(at * len(ids) + np.searchsorted(ids, near[at, column]))
        at, person = keys // len(ids), keys % len(ids)
        similarity = np.einsum("ij,ij->i", centroids[person], vectors[part[at]])
        order = np.lexsort((-similarity, at))
        first = order[np.r_[True, at[order[1:]] != at[order[:-1]]]] if len(order) else order
        chosen[start + at[first]] = ids[person[first]]
        best[start + at[first]] = similarity[first]
    at = np.searchsorted(ids, np.maximum(chosen, ids[0]))
    typical = typical_similarity(np.linalg.norm(sums, axis=1).astype(np.float64)[at], counts[at])
    accepted = rule.accepts(graph, rows, labels, chosen, best, typical, partners, counts[at])
    chosen[~accepted] = NOISE
    # Persons already in these faces' media items.
    assigned = (labels >= 0) & np.isin(media_item_ids, media_item_ids[rows])
    taken = np.unique(pair_keys(media_item_ids[assigned], labels[assigned]))
    out = labels.copy()
    out[rows] = one_per_media_item(chosen, best, media_item_ids[rows], taken)
    return out


# Two faces are mutual neighbours when each is among the other's this many nearest faces.
MUTUAL_NEIGHBOURS = 10
# The mutual-neighbour clause joins groups of at least this many faces: a pair's mean is
# too noisy to say more than its two faces do.
SPLIT_MIN = 3


@dataclass(frozen=True)
class Merge:
    """When two new groups are one person: their means at least `threshold` similar, or at
    least `split_threshold` similar while their faces are mutual neighbours (each among the
    other's MUTUAL_NEIGHBOURS nearest) at least `split_links` times per face of the smaller;
    and in both cases their faces on average at least `link` similar (average linkage). The
    mean of a loose group leans towards the library's average face, so two loose groups' means
    are alike whoever is in them; their faces are not."""

    threshold: float
    split_threshold: float = 1.0
    split_links: float = 1.0
    link: float = -1.0


def merge_similar(
    vectors: NDArray[np.float32],
    labels: NDArray[np.int64],
    first_new: int,
    graph: KnnGraph,
    merge: Merge,
    media_item_ids: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]:
    """New groups (labels >= first_new) that `merge` finds alike become one: density splits a
    person whose photos vary into pieces that the rule alone never rejoins. Candidate pairs are
    groups joined by a graph edge; of those alike, a pair merges when each is the other's most
    alike; two groups with faces of one media item are never joined; existing persons never
    change."""
    if not (labels >= first_new).any():
        return labels
    count = int(labels.max()) + 1
    rows = np.flatnonzero(labels >= first_new)
    near = graph.neighbours[rows]
    a = np.repeat(labels[rows], near.shape[1])
    b = np.where(near >= 0, labels[np.maximum(near, 0)], NOISE).ravel()
    pair = (a >= first_new) & (b >= first_new) & (a != b)
    if not pair.any():
        return labels
    keys = np.unique(np.minimum(a[pair], b[pair]) * count + np.maximum(a[pair], b[pair]))
    a, b = keys // count, keys % count
    ids = np.unique(np.concatenate([a, b]))
    sums, counts = sums_of(labels, vectors, ids)
    centroids = l2_normalize(sums)
    a_at, b_at = np.searchsorted(ids, a), np.searchsorted(ids, b)
    similarity = np.einsum("ij,ij->i", centroids[a_at], centroids[b_at])
    # The mean similarity of a's faces to b's: sum_a . sum_b / (n_a n_b).
    linked = np.einsum("ij,ij->i", sums[a_at], sums[b_at]) >= merge.link * counts[a_at] * counts[b_at]
    similarity = np.where(linked, similarity, -np.inf).astype(np.float32)
    close = similarity >= merge.threshold
    maybe = ~close & (similarity >= merge.split_threshold)
    if maybe.any():
        links = _mutual_links(labels, graph, rows, keys[maybe], count)
        smaller = np.minimum(counts[a_at[maybe]], counts[b_at[maybe]])
        close[maybe] = (links >= merge.split_links * smaller) & (smaller >= SPLIT_MIN)
    if media_item_ids is not None:
        close &= ~np.isin(keys, _sharing_media_items(labels, media_item_ids, first_new, count))
    if not close.any():
        return labels
    # Only pairs that are each other's most alike: A like B and B like C is no reason for A and
    # C, so the merged group is compared anew in the next round (the fixed point's), as
    # average linkage merges reciprocal nearest neighbours.
    a, b, similarity = a[close], b[close], similarity[close]
    ends, others = np.concatenate([a, b]), np.concatenate([b, a])
    order = np.lexsort((-np.concatenate([similarity, similarity]), ends))
    first = np.r_[True, ends[order[1:]] != ends[order[:-1]]]
    best = np.full(count, NOISE, dtype=np.int64)
    best[ends[order[first]]] = others[order[first]]
    mutual = (best[a] == b) & (best[b] == a)
    target = np.arange(count, dtype=np.int64)
    target[b[mutual]] = a[mutual]
    return np.where(labels >= first_new, target[np.maximum(labels, 0)], labels).astype(np.int64)


def _mutual_links(
    labels: NDArray[np.int64], graph: KnnGraph, rows: NDArray[np.int64], keys: NDArray[np.int64], count: int
) -> NDArray[np.int64]:
    """For each pair of groups (`keys`, a * count + b with a < b), how many pairs of their faces
    are mutual neighbours, counted from `rows` (which hold every face of those groups)."""
    near = graph.neighbours[rows, :MUTUAL_NEIGHBOURS]
    at, column = np.nonzero(near >= 0)
    first, second = rows[at], near[at, column]
    a, b = labels[first], labels[second]
    cross = (a >= 0) & (b >= 0) & (a < b)  # each mutual pair once: from its lower group's face
    first, second, a, b = first[cross], second[cross], a[cross], b[cross]
    wanted = np.isin(a * count + b, keys)
    first, second, a, b = first[wanted], second[wanted], a[wanted], b[wanted]
    back = (graph.neighbours[second, :MUTUAL_NEIGHBOURS] == first[:, None]).any(axis=1)
    found, links = np.unique((a * count + b)[back], return_counts=True)
    out = np.zeros(len(keys), dtype=np.int64)
    if not len(found):
        return out
    at = np.searchsorted(found, keys)
    hit = (at < len(found)) & (found[np.minimum(at, len(found) - 1)] == keys)
    out[hit] = links[at[hit]]
    return out


def _sharing_media_items(
    labels: NDArray[np.int64], media_item_ids: NDArray[np.int64], first_new: int, count: int
) -> NDArray[np.int64]:
    """Pairs of new groups (a * count + b, a < b) that hold faces of one media item."""
    rows = np.flatnonzero(labels >= first_new)
    # Each (media item, group) once, sorted by media item then group.
    both = np.unique(np.stack([media_item_ids[rows], labels[rows]], axis=1), axis=0)
    media, group = both[:, 0], both[:, 1]
    keys = []
    # The groups of one media item side by side: pair each with the one `step` places later.
    for step in range(1, len(media)):
        same = media[step:] == media[:-step]
        if not same.any():
            break
        keys.append(group[:-step][same] * count + group[step:][same])
    return np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)


def touched(
    before: NDArray[np.int64], after: NDArray[np.int64], graph: KnnGraph, size: int
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """What a move of labels from `before` to `after` can change for the rule: (rows to look at
    again, groups whose members changed, as a mask of `size` labels). A row's decision depends
    on its own person's mean, its neighbours' labels and their persons' means: so the rows are
    those moved, the members of changed groups, and the rows with one of these as a neighbour.
    (A face refused a person because another face of its media item was in it has a neighbour
    in that person, since candidates come from neighbours: it is among the latter.)"""
    changed = before != after
    groups = np.zeros(size, dtype=bool)
    groups[before[changed & (before >= 0)]] = True
    groups[after[changed & (after >= 0)]] = True
    moved = changed | ((after >= 0) & groups[np.maximum(after, 0)])
    return moved | _has_neighbour_in(graph, moved), groups


def _has_neighbour_in(graph: KnnGraph, rows: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """For each row, whether one of its neighbours is among `rows` (a mask)."""
    out = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), 262_144):  # bounded temporaries: (rows, k) booleans
        part = graph.neighbours[start : start + 262_144]
        out[start : start + len(part)] = (rows[np.maximum(part, 0)] & (part >= 0)).any(axis=1)
    return out


def fixed_point(
    vectors: NDArray[np.float32],
    labels: NDArray[np.int64],
    first_new: int,
    movable: NDArray[np.bool_],
    media_item_ids: NDArray[np.int64],
    graph: KnnGraph,
    rule: Rule,
    merge: Merge,
    min_size: int,
    weights: NDArray[np.int64] | None = None,
    seed: bool = False,
    partners: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]:
    """The rule applied until nothing moves: new groups (labels >= first_new) that are alike
    merge, members that fail leave, new groups below `min_size` dissolve, and `movable` rows
    without a person join one. After the first round each step looks only at what the others
    (or itself) changed since it last ran: a round late in the loop moves a handful of faces,
    and looking at every face again cost seconds per round at 1 000 000 faces.

    `weights`: the faces each row stands for (a video track's row stands for several), counted
    towards `min_size`. With `seed`, once nothing moves, each movable row still without a
    person that weighs `min_size` on its own (a scene of a few sharp frames) starts a new
    group, and the rule runs on from there: it first had every chance to join a person. So
    does each pair of movable rows without a person that are each other's `partners`: a group
    of two that stays a person while the two stay together, whatever `min_size`."""
    weights = np.ones(len(labels), dtype=np.int64) if weights is None else weights
    heavy = movable & enough_for_a_person(weights, min_size)
    seedable = heavy.copy() if seed else np.zeros(len(labels), dtype=bool)
    if seed and partners is not None:
        # A pair seeds once, from its first row; the second is seeded with it.
        seedable |= (partners > np.arange(len(labels))) & movable & movable[np.maximum(partners, 0)]
    size = (int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 1) + int(seedable.sum())
    # Per step, the rows and groups to look at again; None: everything (the first round).
    pending: dict[str, tuple[NDArray[np.bool_], NDArray[np.bool_]] | None] = dict.fromkeys(
        ("merge", "trim", "join")
    )

    def record(before: NDArray[np.int64], after: NDArray[np.int64], step: str) -> NDArray[np.int64]:
        pending[step] = (np.zeros(len(after), dtype=bool), np.zeros(size, dtype=bool))
        if not np.array_equal(before, after):
            rows, groups = touched(before, after, graph, size)
            for masks in pending.values():
                if masks is not None:
                    masks[0][:] |= rows
                    masks[1][:] |= groups
        return after

    def rows(step: str) -> NDArray[np.bool_] | None:
        masks = pending[step]
        return None if masks is None else masks[0]

    for _ in range(MAX_ROUNDS):
        start = labels
        masks = pending["merge"]
        if masks is None or masks[1].any():
            # Every new group each time: a pair merges only when each is the other's best, and
            # that is known only by looking at all of a group's candidates.
            labels = record(
                labels, merge_similar(vectors, labels, first_new, graph, merge, media_item_ids), "merge"
            )
        step = trim(vectors, labels, movable, graph, rule, rows("trim"), partners)
        new = step >= first_new
        if new.any():
            small = too_small(np.where(new, step, NOISE), weights, min_size, size, partners)
            step = np.where(new & small[np.maximum(step, 0)], NOISE, step)
        labels = record(labels, step, "trim")
        joined = join(vectors, labels, movable, media_item_ids, graph, rule, rows("join"), partners)
        labels = record(labels, joined, "join")
        if np.array_equal(start, labels):
            fresh = np.flatnonzero(seedable & (labels == NOISE))
            pair = np.zeros(len(fresh), dtype=bool)
            if partners is not None:  # a pair while both still wait, from its first row
                partner = partners[fresh]
                pair = (partner > fresh) & (labels[np.maximum(partner, 0)] == NOISE)
                fresh, pair = fresh[pair | heavy[fresh]], pair[pair | heavy[fresh]]
            seedable[:] = False  # once: a seed the rule later dissolves stays without a person
            if not len(fresh):
                break
            step = labels.copy()
            step[fresh] = max(int(labels.max()) + 1, first_new) + np.arange(len(fresh))
            step[partners[fresh[pair]]] = step[fresh[pair]]  # type: ignore[index]
            moved, groups = touched(labels, step, graph, size)
            for masks in pending.values():
                if masks is not None:
                    masks[0][:] |= moved
                    masks[1][:] |= groups
            labels = step
    return labels
