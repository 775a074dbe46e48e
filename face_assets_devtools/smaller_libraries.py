"""Smaller libraries cut from a labelled set (`labelled.load_labelled`'s data): the defaults are
chosen on a whole set, and a user's library is often far smaller. Used by
scripts/sweep_library_size.py and, as a constraint, by scripts/sweep_clustering.py."""

from __future__ import annotations

import numpy as np

from face_assets.core.clustering.params import ClusterParams
from face_assets.core.evaluation import FREQUENT, score_clusters
from face_assets_devtools.labelled import persons_for


def cut(data: dict[str, np.ndarray], identities: set[str]) -> dict[str, np.ndarray]:
    """The faces of the photos of `identities`, as a labelled library of their own."""
    items = np.unique(data["media_item_ids"][np.isin(data["labels"], list(identities))])
    rows = np.flatnonzero(np.isin(data["media_item_ids"], items))
    return {key: data[key][rows] for key in ("vectors", "media_item_ids", "face_ids", "labels")}


def draw(
    data: dict[str, np.ndarray], people: int, count: int, rng: np.random.Generator
) -> dict[str, list[set[str]]]:
    """`count` random and `count` look-alike sets of `people` identities."""
    labelled = data["labels"] != ""
    names, at = np.unique(data["labels"][labelled], return_inverse=True)
    sums = np.zeros((len(names), data["vectors"].shape[1]))
    np.add.at(sums, at, data["vectors"][labelled])
    means = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    frequent = np.flatnonzero(np.bincount(at, minlength=len(names)) >= FREQUENT)
    people = min(people, len(names))
    random = [set(names[rng.choice(len(names), people, replace=False)]) for _ in range(count)]
    alike = []
    for seed in rng.choice(frequent, min(count, len(frequent)), replace=False):
        nearest = np.argsort(-(means @ means[seed]))[:people]  # the seed itself first
        alike.append(set(names[nearest]))
    return {"random": random, "look-alike": alike}


def score_libraries(libs: list[dict[str, np.ndarray]], params: ClusterParams) -> dict[str, float]:
    """Each library clustered as the first clustering of an empty library: BCubed over their
    faces together, the worst library's precision and how many have two people in one person."""
    truth: list[str] = []
    predicted: list[str | None] = []
    worst, merged = 1.0, 0
    for k, lib in enumerate(libs):
        persons = persons_for(lib, params)
        labelled = np.flatnonzero(lib["labels"] != "")
        names = lib["labels"][labelled].tolist()
        guess = [None if p < 0 else f"{k}-{p}" for p in persons[labelled]]
        one = score_clusters(names, guess)
        worst = min(worst, one.bcubed_precision)
        merged += one.bcubed_precision < 1.0
        truth += [f"{k}-{name}" for name in names]
        predicted += guess
    pooled = score_clusters(truth, predicted)
    return {
        "bcubed_p": pooled.bcubed_precision,
        "bcubed_r": pooled.bcubed_recall,
        "bcubed_f": pooled.bcubed_f,
        "worst_p": worst,
        "merged": merged,
        "libraries": len(libs),
    }
