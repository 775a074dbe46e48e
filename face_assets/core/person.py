"""Persons from face embeddings: match to known persons, cluster the rest, keep noise waiting."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from face_assets.core.batch import IdRange
from face_assets.core.clustering import membership
from face_assets.core.clustering.cluster import (
    NOISE,
    ClusterParams,
    cluster_embeddings,
    match_to_persons,
    person_centroids,
)
from face_assets.core.clustering.graph import KnnGraph, knn_graph
from face_assets.core.portrait import update_portraits
from face_assets.core.storage.persons import FaceEmbeddings
from face_assets.core.storage.store import FaceStore
from face_assets.core.track import Collapsed, collapse_tracks, expand_tracks

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PersonChanges:
    """What one run changed in who is whom, both ways: a run that unassigns faces or dissolves a
    person says so as plainly as one that adds."""

    faces_assigned: int  # had no person, have one now (an existing person or a new one)
    faces_unassigned: int  # left a person and have none now
    faces_moved: int  # left one person for another
    persons_made: int
    persons_dissolved: int  # left without faces by this run, or deleted by it (emptied before)

    def metadata(self) -> dict[str, int]:
        """Counts only, for a materialisation's metadata (Dagster keeps it for good)."""
        return {
            "faces_assigned": self.faces_assigned,
            "faces_unassigned": self.faces_unassigned,
            "faces_moved": self.faces_moved,
            "persons_made": self.persons_made,
            "persons_dissolved": self.persons_dissolved,
        }


def person_changes(
    before: NDArray[np.int64], after: NDArray[np.int64], made: int, deleted: Iterable[int] = ()
) -> PersonChanges:
    """Pure: the changes from `before` to `after` (person id per face, -1 for none, row-aligned,
    as written), with `made` persons created and the `deleted` person ids."""
    had, has = before >= 0, after >= 0
    emptied = set(np.unique(before[had]).tolist()) - set(np.unique(after[has]).tolist())
    return PersonChanges(
        faces_assigned=int((~had & has).sum()),
        faces_unassigned=int((had & ~has).sum()),
        faces_moved=int((had & has & (before != after)).sum()),
        persons_made=made,
        persons_dissolved=len(emptied | {int(p) for p in deleted}),
    )


@dataclass(frozen=True)
class PersonUpdate:
    faces: int
    matched_to_existing: int
    new_persons: int
    faces_in_new_persons: int
    unassigned: int
    persons_total: int
    clustered: bool
    seconds: float
    changes: PersonChanges
    too_poor: int = 0  # unassigned after it as too poor to compare (ClusterParams.min_sharpness)


def _written(
    data: FaceEmbeddings,
    groups: list[NDArray[np.int64]],
    created: list[int],
    assigned: NDArray[np.int64],
    noise: NDArray[np.int64],
    final: NDArray[np.int64],
) -> NDArray[np.int64]:
    """Each face's person after a clustering wrote: `assigned` rows their `final` person, new
    groups their created person, `noise` rows none, the others as they were."""
    after = data.person_ids.copy()
    after[assigned] = final[assigned]
    after[noise] = NOISE
    for rows, person in zip(groups, created, strict=True):
        after[rows] = person
    return after


def _split_same_media_item(
    members: NDArray[np.int64], media_item_ids: NDArray[np.int64], vectors: NDArray[np.float32]
) -> NDArray[np.int64]:
    """Drops all but the most central face of each media item from one cluster."""
    centrality = vectors[members] @ vectors[members].mean(axis=0)
    kept = membership.one_per_media_item(
        np.zeros(len(members), dtype=np.int64), centrality, media_item_ids[members], np.zeros(0, np.int64)
    )
    return members[kept >= 0]


def settle(
    media_item_ids: NDArray[np.int64],
    vectors: NDArray[np.float32],
    assigned: NDArray[np.int64],
    groups: list[NDArray[np.int64]],
    waiting: NDArray[np.bool_],
    params: ClusterParams,
    graph: KnnGraph,
    weights: NDArray[np.int64] | None = None,
) -> tuple[NDArray[np.int64], list[NDArray[np.int64]]]:
    """Pure, row-aligned: applies the membership rule (membership.py) to a fixed point. Rows
    with `waiting` set may join any person, existing (`assigned` ids) or new (`groups` of row
    indices), and leave one that no longer accepts them; new groups that fall below
    min_cluster_size dissolve. Other rows never change, so the next run, seeing the same faces,
    finds nothing more to do.

    Returns the existing person id per face (-1 for none or for a new person's face) and the
    new persons' rows after settling.
    """
    ids = np.unique(assigned[assigned >= 0])
    # Dense labels: existing persons 0..len(ids)-1, then the new groups.
    labels = np.where(assigned >= 0, np.searchsorted(ids, assigned), NOISE).astype(np.int64)
    for k, members in enumerate(groups):
        labels[members] = len(ids) + k
    rule = params.rule(len(ids) + len(groups))
    pairs = membership.partners(graph, media_item_ids, params.pair_threshold)
    labels = membership.fixed_point(
        vectors, labels, len(ids), waiting, media_item_ids, graph, rule,
        params.merge(), params.min_cluster_size, weights, partners=pairs,
    )  # fmt: skip
    new_rows = [np.flatnonzero(labels == len(ids) + k) for k in range(len(groups))]
    existing = (labels >= 0) & (labels < len(ids))
    final = np.full(len(labels), NOISE, dtype=np.int64)
    final[existing] = ids[labels[existing]]
    return final.astype(np.int64), [rows for rows in new_rows if len(rows)]


def new_groups(
    media_item_ids: NDArray[np.int64],
    vectors: NDArray[np.float32],
    rows: NDArray[np.int64],
    params: ClusterParams,
    graph: KnnGraph,
    weights: NDArray[np.int64] | None = None,
) -> list[NDArray[np.int64]]:
    """Pure: the rows clustered, on their part of the kNN graph, into groups of at least
    min_cluster_size faces (a row stands for `weights` faces), one face per media item in each."""
    groups: list[NDArray[np.int64]] = []
    if not len(rows):
        return groups
    labels = cluster_embeddings(
        vectors, params, graph=graph, rows=rows, weights=weights, media_item_ids=media_item_ids
    )
    clustered = labels >= 0
    if not clustered.any():
        return groups
    order = np.argsort(labels[clustered], kind="stable")
    members_sorted, labels_sorted = rows[clustered][order], labels[clustered][order]
    pairs = membership.partners(graph, media_item_ids, params.pair_threshold)
    for members in np.split(members_sorted, np.flatnonzero(np.diff(labels_sorted)) + 1):
        members = _split_same_media_item(np.sort(members), media_item_ids, vectors)
        weight = len(members) if weights is None else int(weights[members].sum())
        pair = len(members) == 2 and pairs[members[0]] == members[1]
        if pair or membership.enough_for_a_person(weight, params.min_cluster_size):
            groups.append(members)
    return groups


def plan_persons(
    media_item_ids: NDArray[np.int64],
    person_ids: NDArray[np.int64],
    clustered: NDArray[np.bool_],
    vectors: NDArray[np.float32],
    params: ClusterParams,
    weights: NDArray[np.int64] | None = None,
) -> tuple[NDArray[np.int64], list[NDArray[np.int64]], bool]:
    """Pure planning step, row-aligned with the inputs.

    Returns the person id per face (existing ids, or -1), the new persons as arrays of row
    indices, and whether clustering ran. Clustering runs only when an unassigned face has not
    been through it before, so an unchanged library gives an unchanged plan.
    """
    graph = knn_graph(vectors, params.neighbours, params.random_state)
    waiting = person_ids == NOISE
    # Join known persons, cluster what is left, then settle old and new persons together.
    assigned, _ = settle(media_item_ids, vectors, person_ids, [], waiting, params, graph, weights)
    rest = np.flatnonzero(assigned == NOISE)
    ran = bool(len(rest)) and not bool(clustered[rest].all())
    groups = new_groups(media_item_ids, vectors, rest, params, graph, weights) if ran else []
    final, groups = settle(media_item_ids, vectors, assigned, groups, waiting, params, graph, weights)
    return final, groups, ran


def _on_tracks(
    data: FaceEmbeddings,
    seen: Collapsed,
    final: NDArray[np.int64],
    groups: list[NDArray[np.int64]],
    taken: set[tuple[int, int]] | None = None,
) -> tuple[NDArray[np.int64], list[NDArray[np.int64]]]:
    """A plan made on the collapsed library, for every face: a track's faces follow its
    representatives; a face a user placed stays where the user put it."""
    final, groups = expand_tracks(seen, len(data.face_ids), final, groups, data.sightings, taken)
    placed = np.flatnonzero(data.user_placed)
    final[placed] = data.person_ids[placed]
    groups = [g[~data.user_placed[g]] for g in groups]
    return final, [g for g in groups if len(g)]


PERSONS_LOCK = "person_clusters"


def default_owner() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


@dataclass
class _Plan:
    """What a clustering decided, row-aligned with the library it read."""

    groups: list[NDArray[np.int64]]  # rows that become new persons, one array per person
    moved: NDArray[np.int64]  # rows that join an existing person
    noise: NDArray[np.int64]  # rows left unassigned and marked as seen by the clustering
    final: NDArray[np.int64]  # each row's person after it (NOISE: none)
    unassigned: int
    clustered: bool
    matches: list[tuple[int, int, float]] = field(default_factory=list)  # (face, person, cos)
    regrouped: list[tuple[int, int]] = field(default_factory=list)  # (face, person), clustered


def require_one_model(store: FaceStore) -> None:
    """MixedModels in one line when the faces' embeddings come from two models: persons are
    never made or matched across them (a switch to another model not finished)."""
    from face_assets.core.embedding import MixedModels

    model = store.any_embedding_model()
    other = store.other_embedding_model(model) if model is not None else None
    if other is not None:
        raise MixedModels(
            f"the library's faces are embedded by {model} and by {other}: persons are never made of "
            "two models' embeddings; finish moving the library to FACE_ASSETS_EMBEDDER's model with "
            "`face-assets recognize`"
        )


def comparable(data: FaceEmbeddings, params: ClusterParams, every: bool) -> NDArray[np.bool_]:
    """Rows a plan may compare with others: every row but the faces too poor to compare
    (ClusterParams.too_poor) that the plan may place: those without a person, or with `every`
    (a rebuild) all but the user's. A face of a dozen pixels is nearly as alike to other such
    faces as to its own person: let in, it joins persons by chance and bridges people."""
    movable = ~data.user_placed & (every | (data.person_ids == NOISE))
    return ~(params.too_poor(data.sharpness) & movable)


def _cluster_library(
    store: FaceStore,
    params: ClusterParams,
    owner: str,
    plan: Callable[[FaceEmbeddings, Collapsed, ClusterParams], _Plan],
    done: str,
    every: bool,
) -> PersonUpdate:
    """The frame both clusterings share: the persons lock held throughout, the library read
    once (a track as one observation, faces too poor to compare left out), the plan written in
    one transaction, portraits."""
    with store.lock(PERSONS_LOCK, owner or default_owner()):
        require_one_model(store)
        started = time.perf_counter()
        data = store.face_embeddings()
        usable = comparable(data, params, every)
        seen = collapse_tracks(data.track_ids, data.vectors, params.min_cluster_size, usable)
        decided = plan(data, seen, params)
        deleted: list[int] = []
        created = store.apply_person_changes(
            [data.face_ids[g].tolist() for g in decided.groups], decided.matches,
            data.face_ids[decided.noise].tolist(), regrouped=decided.regrouped, library=data,
            deleted=deleted,
        )  # fmt: skip
        update_portraits(store, library=data)
        after = _written(data, decided.groups, created, decided.moved, decided.noise, decided.final)
        summary = PersonUpdate(
            faces=len(data.face_ids),
            matched_to_existing=len(decided.matches) + len(decided.regrouped),
            new_persons=len(created),
            faces_in_new_persons=sum(len(g) for g in decided.groups),
            unassigned=decided.unassigned,
            persons_total=store.counts()["persons"],
            clustered=decided.clustered,
            seconds=time.perf_counter() - started,
            changes=person_changes(data.person_ids, after, len(created), deleted),
            too_poor=int((~usable & (after == NOISE)).sum()),
        )
    logger.info("persons %s: %s", done, summary)
    return summary


def update_persons(store: FaceStore, params: ClusterParams, owner: str = "") -> PersonUpdate:
    """Assigns every embedded face it can to a person and writes it in one transaction.

    Holds the persons lock throughout: a second clustering started meanwhile is refused.
    """
    return _cluster_library(store, params, owner, _update_plan, "updated", every=False)


def _update_plan(data: FaceEmbeddings, seen: Collapsed, params: ClusterParams) -> _Plan:
    r = seen.rows
    final, groups, ran = plan_persons(
        data.sightings[r], data.person_ids[r], data.clustered[r], seen.vectors, params, seen.weights
    )
    final, groups = _on_tracks(data, seen, final, groups)
    newly = np.flatnonzero((data.person_ids == NOISE) & (final >= 0))
    ids, centroids = person_centroids(data.vectors, final)
    own = centroids[np.searchsorted(ids, final[newly])]
    similarity = np.einsum("ij,ij->i", data.vectors[newly], own)
    matches = [
        (int(data.face_ids[i]), int(final[i]), float(s)) for i, s in zip(newly, similarity, strict=True)
    ]
    in_groups = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
    left = np.setdiff1d(np.flatnonzero(final == NOISE), in_groups)
    # Faces too poor to compare were not seen: left unmarked, a lower min_sharpness sees them.
    first_seen = left[~data.clustered[left] & seen.covered(len(data.face_ids))[left]]
    noise = first_seen if ran else np.zeros(0, np.int64)
    return _Plan(groups, newly, noise, final, int(len(left)), ran, matches=matches)


def rebuild_persons(store: FaceStore, params: ClusterParams, owner: str = "") -> PersonUpdate:
    """Rebuilds the clusters from scratch over all faces, keeping the user's work.

    Faces a user placed stay where they are. Every other face is clustered again; a rebuilt
    cluster takes the Id of the person most of its faces had before (each Id once), so a
    person whose faces did not change keeps its Id. Faces left over then join the person they
    match. Automatic persons left without faces disappear; named ones stay.
    """
    return _cluster_library(store, params, owner, _rebuild_plan, "rebuilt", every=True)


def _rebuild_plan(data: FaceEmbeddings, seen: Collapsed, params: ClusterParams) -> _Plan:
    r = seen.rows
    placed, persons, sightings = data.user_placed[r], data.person_ids[r], data.sightings[r]
    candidates = np.flatnonzero(~placed)
    graph = knn_graph(seen.vectors, params.neighbours, params.random_state)
    groups = new_groups(sightings, seen.vectors, candidates, params, graph, seen.weights)
    final = np.where(placed, persons, NOISE)
    fresh: list[NDArray[np.int64]] = []
    taken_ids: set[int] = set()
    for members in sorted(groups, key=len, reverse=True):
        previous = persons[members]
        previous = previous[previous >= 0]
        ids, counts = np.unique(previous, return_counts=True)
        if len(ids) and counts.max() * 2 > len(members) and int(ids[np.argmax(counts)]) not in taken_ids:
            taken_ids.add(int(ids[np.argmax(counts)]))
            final[members] = int(ids[np.argmax(counts)])
        else:
            fresh.append(members)
    # Leftovers join the person (old, rebuilt or new) they match, as in every clustering.
    final, fresh = settle(sightings, seen.vectors, final, fresh, ~placed, params, graph, seen.weights)
    final, fresh = _on_tracks(data, seen, final, fresh)
    movable = ~data.user_placed
    if fresh:
        movable[np.concatenate(fresh)] = False
    changed = np.flatnonzero(movable & (final != data.person_ids) & (final >= 0))
    regrouped = [(int(data.face_ids[i]), int(final[i])) for i in changed]
    # Faces too poor to compare lose the person a clustering gave them; the others are not seen.
    left = movable & (final == NOISE)
    noise = np.flatnonzero(left & (seen.covered(len(final)) | (data.person_ids >= 0)))
    return _Plan(fresh, changed, noise, final, int(left.sum()), True, regrouped=regrouped)


@dataclass(frozen=True)
class BatchMatch:
    faces: int  # unassigned faces of the batch
    matched: int
    waiting: int
    seconds: float
    changes: PersonChanges
    match_threshold: float  # as risen for the library's persons (ClusterParams.match_threshold_for)
    too_poor: int = 0  # of the waiting faces, those too poor to compare (ClusterParams.min_sharpness)


def match_new_faces(
    store: FaceStore, params: ClusterParams, id_range: IdRange, owner: str = "", wait_seconds: float = 600
) -> BatchMatch:
    """Gives the batch's unassigned faces the existing person they match; the rest wait for the
    next clustering. Waits for a running clustering rather than writing beside it.

    Reads the batch's faces and one mean per person (their stored sums), never the library's
    embeddings: the cost follows the batch and the number of persons.
    """
    started = time.perf_counter()
    with store.lock(PERSONS_LOCK, owner or default_owner(), wait_seconds=wait_seconds):
        require_one_model(store)
        batch = store.face_embeddings(id_range, unassigned_only=True)
        if not len(batch.face_ids):
            return BatchMatch(
                0, 0, 0, time.perf_counter() - started, PersonChanges(0, 0, 0, 0, 0), params.match_threshold
            )
        means = store.person_means()
        threshold = params.match_threshold_for(len(means.person_ids))
        taken = store.persons_in_media_items(batch.media_item_ids.tolist())
        # A video track is matched as one observation (its mean), and its faces go together.
        usable = comparable(batch, params, every=False)
        seen = collapse_tracks(batch.track_ids, batch.vectors, params.min_cluster_size, usable)
        chosen_seen, similarity_seen = match_to_persons(
            seen.vectors,
            batch.sightings[seen.rows],
            means.person_ids,
            means.centroids,
            threshold,
            taken,
        )
        chosen, _ = expand_tracks(seen, len(batch.face_ids), chosen_seen, [], batch.sightings, taken)
        similarity = np.zeros(len(batch.face_ids), dtype=np.float64)
        similarity[seen.rows] = similarity_seen
        for members, positions in zip(seen.tracks, seen.positions, strict=True):
            similarity[members] = similarity_seen[positions].max()
        matches = [
            (int(f), int(p), float(s))
            for f, p, s in zip(batch.face_ids, chosen, similarity, strict=True)
            if p >= 0
        ]
        deleted: list[int] = []
        store.apply_person_changes([], matches, [], deleted=deleted)
        if matches:
            update_portraits(store, sorted({p for _, p, _ in matches}), [f for f, _, _ in matches])
    faces = len(batch.face_ids)
    # Batch matching only gives unassigned faces a person; the persons it deletes were emptied
    # earlier (a correction moved their faces away).
    changes = person_changes(batch.person_ids, chosen, 0, deleted)
    return BatchMatch(
        faces,
        len(matches),
        faces - len(matches),
        time.perf_counter() - started,
        changes,
        threshold,
        int((~usable & (chosen < 0)).sum()),
    )
