"""How faces become persons: every clustering knob written once, here, with its default, its
limits, what it means and the setting that gives it (FACE_ASSETS_ + the name, upper case).
The settings, the command line and the Dagster config all take their fields from this class.

Defaults are chosen on labelled photos by scripts/sweep_clustering.py, match_rise by
scripts/sweep_match_rise.py, min_sharpness by scripts/poor_faces.py (docs/persons.md).
Clustering finds candidate groups on a k-nearest-neighbour graph; membership is then decided
face by face, for new groups and for faces joining a person alike: a face belongs to a person
when its similarity to the person's mean reaches `match_threshold` (risen by `match_rise` for
every tenfold of persons beyond PERSONS_KNOWN), or reaches `vote_threshold`
while its `vote_neighbours` nearest faces all belong to that person (and, for a large person, no
more than `vote_slack` below its typical similarity; in a smaller person its partner, the face
it is each other's nearest with, votes for it only with `partner_votes`). Two faces that are
each other's nearest are a person at `pair_threshold`; two new groups are one person at
`merge_threshold`, or at `split_threshold` when their faces are mutual neighbours, and never
when their faces are on average less than `merge_link` alike. A face no person holds whose
thumbnail is less sharp than `min_sharpness` (scripts/poor_faces.py) takes part in none of it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo

from face_assets.core.clustering.membership import Merge, Rule
from face_assets.core.storage.codecs import FUSED_MARK

Algorithm = Literal["hdbscan", "agglomerative", "dbscan"]

# The order of persons in the library the thresholds were chosen on (the tuning set makes 801):
# up to this many, a face is held to match_threshold; beyond, to more (match_rise).
PERSONS_KNOWN = 1000


def _knob(default: Any, setting: str | None, description: str, **limits: Any) -> Any:
    return Field(default, description=description, json_schema_extra={"setting": setting}, **limits)


@dataclass(frozen=True)
class ClusterParams:
    algorithm: Algorithm = _knob("hdbscan", "cluster_algorithm", "how candidate groups are found")
    link_threshold: float = _knob(
        0.55, "cluster_link_threshold",
        "agglomerative only: mean pairwise cosine similarity at which two groups are one person",
        gt=-1.0, lt=1.0,
    )  # fmt: skip
    min_cluster_size: int = _knob(3, "cluster_min_size", "faces a new person needs at least", ge=2)
    min_samples: int = _knob(1, "cluster_min_samples", "HDBSCAN and DBSCAN: density", ge=1)
    eps: float = _knob(0.5, "cluster_eps", "DBSCAN only: radius in cosine distance", gt=0.0, lt=2.0)
    match_threshold: float = _knob(
        0.7, "match_threshold", "cosine similarity to a person's mean at which a face joins it",
        ge=-1.0, le=1.0,
    )  # fmt: skip
    match_rise: float = _knob(
        0.058, "cluster_match_rise",
        "rise of match_threshold for every tenfold of persons beyond 1 000: a stranger is compared "
        "with every person, so as many let in per face in a larger library (0: none)",
        ge=0.0, le=0.2,
    )  # fmt: skip
    vote_threshold: float = _knob(
        0.5, "cluster_vote_threshold",
        "... at which it joins when its vote_neighbours nearest faces are all in the person",
        ge=-1.0, le=1.0,
    )  # fmt: skip
    vote_neighbours: int = _knob(2, "cluster_vote_neighbours", "nearest faces that vote", ge=1, le=50)
    vote_slack: float = _knob(
        0.25, "cluster_vote_slack",
        "... and, in a person of 50 faces or more, at most this far below its faces' mean similarity "
        "to its mean (2: no limit)",
        ge=0.0, le=2.0,
    )  # fmt: skip
    partner_votes: bool = _knob(
        False, "cluster_partner_votes",
        "whether a face's partner (the face it is each other's nearest with) votes it into a person "
        "of 5 to 49 faces, with 2 voters (true: two photos of a stranger side by side in it vote each "
        "other in)",
    )  # fmt: skip
    merge_threshold: float = _knob(
        0.8, "cluster_merge_threshold",
        "cosine similarity of two new groups' means that makes them one person (density splits some)",
        ge=-1.0, le=1.0,
    )  # fmt: skip
    merge_link: float = _knob(
        0.5, "cluster_merge_link",
        "mean cosine similarity of two new groups' faces below which they never merge (-1: no limit)",
        ge=-1.0, le=1.0,
    )  # fmt: skip
    split_threshold: float = _knob(
        0.76, "cluster_split_threshold",
        "... that makes them one person when their faces are mutual neighbours (split_links)",
        ge=-1.0, le=1.0,
    )  # fmt: skip
    split_links: float = _knob(
        1.0, "cluster_split_links",
        "pairs of mutual nearest faces between two new groups, per face of the smaller, for that",
        ge=0.0,
    )  # fmt: skip
    pair_threshold: float = _knob(
        0.55, "cluster_pair_threshold",
        "cosine similarity at which two faces that are each other's nearest are a person (1: never)",
        ge=-1.0, le=1.0,
    )  # fmt: skip
    min_sharpness: float = _knob(
        23.0, "cluster_min_sharpness",
        "thumbnail sharpness (variance of the Laplacian) below which a face no person holds is "
        "neither matched nor clustered: a face of a dozen pixels resembles every other (0: none)",
        ge=0.0,
    )  # fmt: skip
    neighbours: int = _knob(30, "cluster_neighbours", "candidate neighbours per face", ge=2, le=200)
    use_umap: bool = _knob(False, "cluster_use_umap", "UMAP before the graph (the `umap` extra)")
    random_state: int = _knob(0, None, "seed of UMAP and the graph's index: the same persons on every run")

    def rule(self, persons: int = 0) -> Rule:
        """Who belongs to a person, in a library of `persons` persons."""
        return Rule(
            self.match_threshold_for(persons), self.vote_threshold, self.vote_neighbours, self.vote_slack,
            self.partner_votes,
        )  # fmt: skip

    def match_threshold_for(self, persons: int) -> float:
        """match_threshold, risen by match_rise for every tenfold of persons beyond PERSONS_KNOWN:
        the impostor tail falls tenfold per match_rise there (scripts/sweep_match_rise.py)."""
        tenfolds = math.log10(max(persons, PERSONS_KNOWN) / PERSONS_KNOWN)
        return min(self.match_threshold + self.match_rise * tenfolds, 1.0)

    def too_poor(self, sharpness: NDArray[np.float32]) -> NDArray[np.bool_]:
        """Faces whose thumbnail is below min_sharpness; an unknown sharpness (NaN) is not."""
        with np.errstate(invalid="ignore"):
            return np.asarray(sharpness < self.min_sharpness)

    def merge(self) -> Merge:
        """When two new groups are one person."""
        return Merge(self.merge_threshold, self.split_threshold, self.split_links, self.merge_link)

    @model_validator(mode="after")
    def _consistent(self) -> ClusterParams:
        if self.vote_neighbours > self.neighbours:
            raise ValueError(
                f"vote_neighbours must be in [1, neighbours={self.neighbours}], got {self.vote_neighbours}"
            )
        if self.vote_threshold > self.match_threshold:
            raise ValueError(
                f"vote_threshold must be in [-1, match_threshold={self.match_threshold}], "
                f"got {self.vote_threshold}"
            )
        if self.pair_threshold < self.vote_threshold:
            raise ValueError(
                f"pair_threshold must be in [vote_threshold={self.vote_threshold}, 1], "
                f"got {self.pair_threshold}"
            )
        return self


# The embedder FaceNet fused with dlib's ResNet (core/vision/fused.py) has cosines of its own
# (on the tuning set, different people 0.69 on average against FaceNet's 0.08, one person's
# faces 0.90 against 0.71), so every threshold is its own, chosen by the same sweep on the fused
# vectors (scripts/sweep_clustering.py --fused 0.8, docs/persons.md); the knobs that are
# distances shrink with the cosines' spread (x 0.34).
FUSED_DEFAULTS: dict[str, float] = {
    "match_threshold": 0.921,
    "vote_threshold": 0.854,
    "pair_threshold": 0.86,
    "merge_threshold": 0.94,
    "split_threshold": 0.92,
    "merge_link": 0.824,
    "vote_slack": 0.086,
    "match_rise": 0.02,
    # The other algorithms' bars, not swept: moved to where they let in as many different
    # people's pairs as FaceNet's (scripts/compare_embedders.py, same_share_threshold).
    "link_threshold": 0.84,
    "eps": 0.176,  # a cosine distance: similarity 0.824, as FaceNet's 0.5
}


def defaults_for(embedder: str) -> dict[str, float]:
    """The knobs whose default differs for this embedder (its setting or model name)."""
    return FUSED_DEFAULTS if FUSED_MARK in embedder else {}


def knobs() -> dict[str, FieldInfo]:
    """ClusterParams' fields that a setting gives, by field name."""
    fields: dict[str, FieldInfo] = ClusterParams.__pydantic_fields__  # type: ignore[attr-defined]
    return {name: info for name, info in fields.items() if setting_name(info)}


def setting_name(info: FieldInfo) -> str | None:
    extra = info.json_schema_extra
    return extra.get("setting") if isinstance(extra, dict) else None  # type: ignore[return-value]


def with_overrides(params: ClusterParams, overrides: dict[str, Any]) -> ClusterParams:
    """`params` with some fields given anew, validated like any ClusterParams; a name that is
    no field is refused (pydantic dataclasses would ignore it)."""
    unknown = sorted(set(overrides) - set(ClusterParams.__pydantic_fields__))  # type: ignore[attr-defined]
    if unknown:
        raise ValueError(f"no such clustering parameter: {', '.join(unknown)}")
    return dataclasses.replace(params, **overrides)
