"""How the clustering sweep chooses a default among the settings it scored
(scripts/sweep_clustering.py, docs/persons.md)."""

from __future__ import annotations

from typing import Any

from face_assets.core.clustering.cluster import ClusterParams


def setting(params: ClusterParams) -> dict[str, object]:
    """The swept knobs of `params`, by their columns."""
    return {"algorithm": params.algorithm[:9], "link": params.link_threshold,
            "match": params.match_threshold, "vote": params.vote_threshold,
            "voters": params.vote_neighbours, "min": params.min_cluster_size,
            "k": params.neighbours, "pair": params.pair_threshold, "split": params.split_threshold,
            "links": params.split_links, "merge": params.merge_threshold, "slack": params.vote_slack,
            "mlink": params.merge_link, "partner": str(params.partner_votes).lower()}  # fmt: skip


def choose(rows: list[dict[str, Any]], f_tie: float) -> dict[str, Any]:
    """The best BCubed F of `rows`; an F within `f_tie` of it is a tie (a few faces of the
    set's thousands: noise, not a reason to move a default), won by the setting that keeps
    more of today's defaults, then the higher F. The merge link is left out of that count:
    among settings that give the same persons the stricter one wins (a safeguard for library
    scale that the tuning set cannot show, taken as far as it changes nothing here)."""
    defaults = setting(ClusterParams())
    del defaults["mlink"]
    top = max(r["bcubed_f"] for r in rows)

    def kept(row: dict[str, Any]) -> int:
        return sum(row[c] == value for c, value in defaults.items())

    tied = [r for r in rows if r["bcubed_f"] >= top - f_tie]
    return max(tied, key=lambda r: (kept(r), r["bcubed_f"], r["pair_f"], r["mlink"]))
