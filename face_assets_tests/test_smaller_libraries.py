"""Smaller libraries cut from a labelled set (scripts/sweep_library_size.py, and the sweep's
--libraries-of): what they hold decides what the sweep's precision floor means."""

import numpy as np

from face_assets.core.clustering.params import ClusterParams
from face_assets_devtools.smaller_libraries import cut, draw, score_libraries
from face_assets_tests.core_tests.synthetic import centres, samples


def _labelled() -> dict[str, np.ndarray]:
    """Twelve people of 6 photos and twenty of 2; every photo has a second, unlabelled face."""
    rng = np.random.default_rng(4)
    people = centres(rng, 32)
    counts = [6] * 12 + [2] * 20
    labelled = np.vstack([samples(rng, c, n, sigma=0.02) for c, n in zip(people, counts, strict=True)])
    photos = len(labelled)
    vectors = np.vstack([labelled, centres(rng, photos)])
    labels = np.array([f"p{k}" for k, n in enumerate(counts) for _ in range(n)] + [""] * photos, dtype=object)
    media = np.r_[np.arange(photos), np.arange(photos)].astype(np.int64)
    return {
        "vectors": vectors,
        "media_item_ids": media,
        "face_ids": np.arange(2 * photos) + 1,
        "labels": labels,
    }


def test_a_cut_library_holds_every_face_of_its_peoples_photos_and_nothing_else() -> None:
    data = _labelled()
    library = cut(data, {"p0", "p20"})
    assert sorted(set(library["labels"].tolist()) - {""}) == ["p0", "p20"]
    assert len(library["vectors"]) == 2 * (6 + 2)  # each photo's labelled face and its other face
    assert set(library["media_item_ids"].tolist()) == set(
        data["media_item_ids"][np.isin(data["labels"], ["p0", "p20"])].tolist()
    )


def test_look_alike_libraries_start_from_a_frequent_person_and_take_the_most_alike() -> None:
    data = _labelled()
    # p1 made like p0: p0's look-alike library of two holds p1.
    data["vectors"][data["labels"] == "p1"] = samples(
        np.random.default_rng(9), data["vectors"][data["labels"] == "p0"].mean(axis=0), 6, sigma=0.03
    )
    sets = draw(data, 2, 12, np.random.default_rng(0))
    assert len(sets["random"]) == 12 and all(len(s) == 2 for s in sets["random"])
    seeds = {min(s, key=lambda name: int(name[1:])) for s in sets["look-alike"]}
    assert seeds <= {f"p{k}" for k in range(12)}  # frequent people (5 photos or more) only
    assert {"p0", "p1"} in sets["look-alike"]


def test_libraries_are_scored_together_and_a_merge_is_counted() -> None:
    data = _labelled()
    apart = score_libraries([cut(data, {"p0", "p2"}), cut(data, {"p3", "p4"})], ClusterParams())
    assert apart["bcubed_p"] == 1.0 and apart["merged"] == 0 and apart["libraries"] == 2
    # p2 made a twin of p0: the clustering cannot tell them apart.
    twin = data["labels"] == "p2"
    data["vectors"][twin] = samples(
        np.random.default_rng(5), data["vectors"][data["labels"] == "p0"].mean(axis=0), 6, sigma=0.02
    )
    both = score_libraries([cut(data, {"p0", "p2"}), cut(data, {"p3", "p4"})], ClusterParams())
    assert both["merged"] == 1 and both["worst_p"] < 1.0
    assert both["worst_p"] < both["bcubed_p"] < 1.0  # the faces of both libraries together
