"""Persons from face embeddings: match to known persons, cluster the rest, keep noise waiting."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from face_assets.core.batch import IdRange
from face_assets.core.clustering.cluster import (
    NOISE,
    ClusterParams,
    cluster_embeddings,
    match_to_persons,
    person_centroids,
)
from face_assets.core.portrait import update_portraits
from face_assets.core.storage.store import FaceStore

logger = logging.getLogger(__name__)

_MAX_MATCH_ROUNDS = 5


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


def _taken(media_item_ids: NDArray[np.int64], person_ids: NDArray[np.int64]) -> set[tuple[int, int]]:
    """(media item, person) pairs already used: a person appears once per media item."""
    return {(int(m), int(p)) for m, p in zip(media_item_ids, person_ids, strict=True) if p >= 0}


def _split_same_media_item(
    members: NDArray[np.int64], media_item_ids: NDArray[np.int64], vectors: NDArray[np.float32]
) -> NDArray[np.int64]:
    """Drops all but the most central face of each media item from one cluster."""
    centroid = vectors[members].mean(axis=0)
    order = members[np.argsort(-(vectors[members] @ centroid), kind="stable")]
    seen: set[int] = set()
    kept = []
    for face in order:
        item = int(media_item_ids[face])
        if item not in seen:
            seen.add(item)
            kept.append(face)
    return np.sort(np.asarray(kept, dtype=np.int64))


def plan_persons(
    media_item_ids: NDArray[np.int64],
    person_ids: NDArray[np.int64],
    clustered: NDArray[np.bool_],
    vectors: NDArray[np.float32],
    params: ClusterParams,
) -> tuple[NDArray[np.int64], list[NDArray[np.int64]], bool]:
    """Pure planning step, row-aligned with the inputs.

    Returns the person id per face (existing ids, or -1), the new persons as arrays of row
    indices, and whether clustering ran. Clustering runs only when an unassigned face has not
    been through it before, so an unchanged library gives an unchanged plan.
    """
    assigned = person_ids.copy()
    unassigned = np.flatnonzero(assigned == NOISE)
    ids, centroids = person_centroids(vectors, assigned)
    taken = _taken(media_item_ids, assigned)
    chosen, _ = match_to_persons(
        vectors[unassigned], media_item_ids[unassigned], ids, centroids,
        params.match_threshold, taken,
    )  # fmt: skip
    assigned[unassigned] = chosen

    rest = np.flatnonzero(assigned == NOISE)
    groups: list[NDArray[np.int64]] = []
    ran = bool(len(rest)) and not bool(clustered[rest].all())
    if ran:
        labels = cluster_embeddings(vectors[rest], params)
        for label in np.unique(labels[labels >= 0]):
            members = _split_same_media_item(rest[labels == label], media_item_ids, vectors)
            if len(members) >= params.min_cluster_size:
                groups.append(members)

    # Faces left over join any person, old or new, they now match; repeated to a fixed point
    # so that the next run, seeing the same faces, finds nothing more to do.
    temporary = np.full(len(assigned), NOISE, dtype=np.int64)
    base = int(max(assigned.max(initial=0), 0)) + 1
    for k, members in enumerate(groups):
        temporary[members] = base + k
    combined = np.where(assigned >= 0, assigned, temporary)
    for _ in range(_MAX_MATCH_ROUNDS):
        waiting = np.flatnonzero(combined == NOISE)
        ids, centroids = person_centroids(vectors, combined)
        taken = _taken(media_item_ids, combined)
        chosen, _ = match_to_persons(
            vectors[waiting], media_item_ids[waiting], ids, centroids,
            params.match_threshold, taken,
        )  # fmt: skip
        if not (chosen >= 0).any():
            break
        combined[waiting] = chosen
    groups = [np.flatnonzero(combined == base + k) for k in range(len(groups))]
    final = np.where(combined >= base, NOISE, combined)
    return final, groups, ran


PERSONS_LOCK = "person_clusters"


def default_owner() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


def update_persons(store: FaceStore, params: ClusterParams, owner: str = "") -> PersonUpdate:
    """Assigns every embedded face it can to a person and writes it in one transaction.

    Holds the persons lock throughout: a second clustering started meanwhile is refused.
    """
    with store.lock(PERSONS_LOCK, owner or default_owner()):
        return _update_persons(store, params)


def _update_persons(store: FaceStore, params: ClusterParams) -> PersonUpdate:
    started = time.perf_counter()
    data = store.face_embeddings()
    final, groups, ran = plan_persons(
        data.media_item_ids, data.person_ids, data.clustered, data.vectors, params
    )
    newly = np.flatnonzero((data.person_ids == NOISE) & (final >= 0))
    ids, centroids = person_centroids(data.vectors, final)
    own = centroids[np.searchsorted(ids, final[newly])]
    similarity = np.einsum("ij,ij->i", data.vectors[newly], own)
    matches = [
        (int(data.face_ids[i]), int(final[i]), float(s)) for i, s in zip(newly, similarity, strict=True)
    ]
    in_groups = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
    left = np.flatnonzero(final == NOISE)
    left = np.setdiff1d(left, in_groups)
    noise = data.face_ids[left[~data.clustered[left]]] if ran else np.zeros(0, np.int64)
    created = store.apply_person_changes([data.face_ids[g].tolist() for g in groups], matches, noise.tolist())
    update_portraits(store)
    summary = PersonUpdate(
        faces=len(data.face_ids),
        matched_to_existing=len(matches),
        new_persons=len(created),
        faces_in_new_persons=int(len(in_groups)),
        unassigned=int(len(left)),
        persons_total=store.counts()["persons"],
        clustered=ran,
        seconds=time.perf_counter() - started,
    )
    logger.info("persons updated: %s", summary)
    return summary


def rebuild_persons(store: FaceStore, params: ClusterParams, owner: str = "") -> PersonUpdate:
    """Rebuilds the clusters from scratch over all faces, keeping the user's work.

    Faces a user placed stay where they are. Every other face is clustered again; a rebuilt
    cluster takes the Id of the person most of its faces had before (each Id once), so a
    person whose faces did not change keeps its Id. Faces left over then join the person they
    match. Automatic persons left without faces disappear; named ones stay.
    """
    with store.lock(PERSONS_LOCK, owner or default_owner()):
        started = time.perf_counter()
        data = store.face_embeddings()
        candidates = np.flatnonzero(~data.user_placed)
        _, groups, _ = plan_persons(
            data.media_item_ids[candidates],
            np.full(len(candidates), NOISE, dtype=np.int64),
            np.zeros(len(candidates), dtype=bool),
            data.vectors[candidates],
            params,
        )
        final = np.where(data.user_placed, data.person_ids, NOISE)
        fresh: list[NDArray[np.int64]] = []
        taken_ids: set[int] = set()
        for members in sorted((candidates[g] for g in groups), key=len, reverse=True):
            previous = data.person_ids[members]
            previous = previous[previous >= 0]
            ids, counts = np.unique(previous, return_counts=True)
            if len(ids) and counts.max() * 2 > len(members) and int(ids[np.argmax(counts)]) not in taken_ids:
                taken_ids.add(int(ids[np.argmax(counts)]))
                final[members] = int(ids[np.argmax(counts)])
            else:
                fresh.append(members)
        # Leftovers join the person (old, rebuilt or new) they match, as in every clustering.
        temporary = final.copy()
        base = int(max(data.person_ids.max(initial=0), 0)) + 1
        for k, members in enumerate(fresh):
            temporary[members] = base + k
        waiting = np.flatnonzero((temporary == NOISE) & ~data.user_placed)
        ids, centroids = person_centroids(data.vectors, temporary)
        chosen, _ = match_to_persons(
            data.vectors[waiting], data.media_item_ids[waiting], ids, centroids,
            params.match_threshold, _taken(data.media_item_ids, temporary),
        )  # fmt: skip
        temporary[waiting] = chosen
        fresh = [np.flatnonzero(temporary == base + k) for k in range(len(fresh))]
        final = np.where(temporary >= base, NOISE, temporary)

        in_fresh = np.concatenate(fresh) if fresh else np.zeros(0, dtype=np.int64)
        movable = ~data.user_placed
        movable[in_fresh] = False
        changed = np.flatnonzero(movable & (final != data.person_ids) & (final >= 0))
        regrouped = [(int(data.face_ids[i]), int(final[i])) for i in changed]
        noise = data.face_ids[np.flatnonzero(movable & (final == NOISE))].tolist()
        created = store.apply_person_changes(
            [data.face_ids[g].tolist() for g in fresh], [], noise, regrouped=regrouped
        )
        update_portraits(store)
        summary = PersonUpdate(
            faces=len(data.face_ids),
            matched_to_existing=len(regrouped),
            new_persons=len(created),
            faces_in_new_persons=int(len(in_fresh)),
            unassigned=len(noise),
            persons_total=store.counts()["persons"],
            clustered=True,
            seconds=time.perf_counter() - started,
        )
    logger.info("persons rebuilt: %s", summary)
    return summary


@dataclass(frozen=True)
class BatchMatch:
    faces: int  # unassigned faces of the batch
    matched: int
    waiting: int
    seconds: float


def match_new_faces(
    store: FaceStore, params: ClusterParams, id_range: IdRange, owner: str = "", wait_seconds: float = 600
) -> BatchMatch:
    """Gives the batch's unassigned faces the existing person they match; the rest wait for the
    next clustering. Waits for a running clustering rather than writing beside it."""
    started = time.perf_counter()
    with store.lock(PERSONS_LOCK, owner or default_owner(), wait_seconds=wait_seconds):
        data = store.face_embeddings()
        in_batch = data.person_ids == NOISE
        if id_range is not None:
            in_batch &= (data.media_item_ids >= id_range[0]) & (data.media_item_ids <= id_range[1])
        rows = np.flatnonzero(in_batch)
        ids, centroids = person_centroids(data.vectors, data.person_ids)
        taken = _taken(data.media_item_ids, data.person_ids)
        chosen, similarity = match_to_persons(
            data.vectors[rows], data.media_item_ids[rows], ids, centroids, params.match_threshold, taken
        )
        matches = [
            (int(data.face_ids[r]), int(p), float(s))
            for r, p, s in zip(rows, chosen, similarity, strict=True)
            if p >= 0
        ]
        store.apply_person_changes([], matches, [])
        if matches:
            update_portraits(store)
    return BatchMatch(len(rows), len(matches), len(rows) - len(matches), time.perf_counter() - started)
