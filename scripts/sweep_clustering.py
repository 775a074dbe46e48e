"""Chooses the clustering defaults on labelled photos: sweeps the parameters and prints the table.

    python scripts/sweep_clustering.py DIR [--identity-depth N] [--cache FILE.db] [--pick center]
                                       [--match ...] [--vote ...] [--voters ...]
                                       [--min-size ...]
                                       [--pair ...] [--split ...] [--split-links ...] [--merge ...]
                                       [--vote-slack ...] [--merge-link ...]
                                       [--partner-votes false true]
                                       [--libraries-of 100 300] [--fused 0.8] [--json PATH]

DIR is in `<identity>/...` layout: the top-level folder under DIR names the person of every
photo below it, as in `face-assets evaluate` (for the tuning set, whose `persons/` and
`distractors/` each hold one folder per person, `--identity-depth 2`). The photos go once
through the product's own detection and embedding steps into a SQLite file (`--cache`, kept
for the next sweep); every parameter set is then scored by the same planning function a
clustering run uses, on a library with no persons yet, as `face-assets evaluate` scores it.
Each photo's label goes to one face (`--pick`); the other faces of a photo take part,
unlabelled.

With `--fused W`, the faces are FaceNet's embeddings fused with dlib's ResNet's (the cosine
W x dlib's + (1 - W) x FaceNet's; face_assets_devtools/second_embedder.py, docs/persons.md),
the thresholds given in that space.

With `--libraries-of`, each parameter set is also scored in libraries of that many people
cut from DIR, twenty drawn at random and twenty of look-alikes each
(face_assets_devtools/smaller_libraries.py, scripts/sweep_library_size.py): `small_p` is the
lowest of their BCubed precisions, held to the same floor as the whole set's.

Printed per parameter set: BCubed and pairwise precision/recall/F over all labelled faces, the
same for people with 5 or more photos alone (the persons a user expects to see), and what
became of the rarely seen people (photos of people with 2 to 4 photos): left unassigned, in a
person of their own, or merged into someone else's person — the error to avoid.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import replace

import numpy as np

from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.evaluation import FREQUENT, rare_fates, score_clusters
from face_assets.core.settings import Settings
from face_assets_devtools.choosing import choose, setting
from face_assets_devtools.harness import add_json_argument, write_json
from face_assets_devtools.labelled import add_labelled_arguments, cached_labelled, persons_for
from face_assets_devtools.second_embedder import fuse, with_dlib
from face_assets_devtools.smaller_libraries import cut, draw, score_libraries


def score(data: dict[str, np.ndarray], persons: np.ndarray) -> dict[str, float]:
    labelled = np.flatnonzero(data["labels"] != "")
    truth = data["labels"][labelled].tolist()
    predicted = [None if p < 0 else int(p) for p in persons[labelled]]
    # Photos without a face found count as unassigned singletons, as `evaluate` counts them.
    misses = int(data["misses"])
    everyone = score_clusters(truth + [f"miss-{i}" for i in range(misses)], predicted + [None] * misses)
    frequent = labelled[data["photos_of_label"][labelled] >= FREQUENT]
    common = score_clusters(
        data["labels"][frequent].tolist(), [None if p < 0 else int(p) for p in persons[frequent]]
    )
    labels = data["labels"][labelled].tolist()
    photos = dict(zip(labels, data["photos_of_label"][labelled].tolist(), strict=True))
    fates = rare_fates(labels, predicted, photos, FREQUENT)
    return {
        "bcubed_p": everyone.bcubed_precision,
        "bcubed_r": everyone.bcubed_recall,
        "bcubed_f": everyone.bcubed_f,
        "pair_p": everyone.pairwise_precision,
        "pair_r": everyone.pairwise_recall,
        "pair_f": everyone.pairwise_f,
        "frequent_bcubed_f": common.bcubed_f,
        "frequent_pair_f": common.pairwise_f,
        **fates,
        "persons": len(np.unique(persons[persons >= 0])),
    }


def grid(args: argparse.Namespace) -> list[ClusterParams]:
    base = ClusterParams()
    combos = []
    for algorithm, match, vote, voters, size, k, pair, (split, links), merge, slack, merge_link, partner in (
        itertools.product(
            args.algorithm, args.match, args.vote, args.voters, args.min_size, args.neighbours, args.pair,
            itertools.product(args.split, args.split_links), args.merge, args.vote_slack, args.merge_link,
            args.partner_votes,
        )
    ):  # fmt: skip
        if vote > match or pair < vote:
            continue
        # The link threshold is a parameter of average linkage only.
        for link in args.link if algorithm == "agglomerative" else [base.link_threshold]:
            combos.append(
                replace(
                    base,
                    algorithm=algorithm,
                    link_threshold=link,
                    match_threshold=match,
                    vote_threshold=vote,
                    vote_neighbours=voters,
                    min_cluster_size=size,
                    neighbours=k,
                    pair_threshold=pair,
                    split_threshold=split,
                    split_links=links,
                    merge_threshold=merge,
                    vote_slack=slack,
                    merge_link=merge_link,
                    partner_votes=partner == "true",
                )  # fmt: skip
            )
    return combos


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_labelled_arguments(parser)
    parser.add_argument("--algorithm", nargs="+", default=["hdbscan", "agglomerative"])
    parser.add_argument("--link", type=float, nargs="+", default=[0.50, 0.55, 0.60])
    parser.add_argument("--match", type=float, nargs="+", default=[0.65, 0.70, 0.75])
    parser.add_argument("--vote", type=float, nargs="+", default=[0.45, 0.50, 0.55])
    parser.add_argument("--voters", type=int, nargs="+", default=[2, 3, 5])
    parser.add_argument("--min-size", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--neighbours", type=int, nargs="+", default=[ClusterParams().neighbours])
    parser.add_argument("--pair", type=float, nargs="+", default=[ClusterParams().pair_threshold])
    parser.add_argument("--split", type=float, nargs="+", default=[ClusterParams().split_threshold])
    parser.add_argument("--split-links", type=float, nargs="+", default=[ClusterParams().split_links])
    parser.add_argument("--merge", type=float, nargs="+", default=[ClusterParams().merge_threshold])
    parser.add_argument("--vote-slack", type=float, nargs="+", default=[ClusterParams().vote_slack])
    parser.add_argument("--merge-link", type=float, nargs="+", default=[ClusterParams().merge_link])
    parser.add_argument(
        "--partner-votes", nargs="+", choices=("false", "true"),
        default=[str(ClusterParams().partner_votes).lower()],
    )  # fmt: skip
    parser.add_argument(
        "--libraries-of", type=int, nargs="*", default=[], metavar="PEOPLE",
        help="also hold the precision floor in libraries of this many people cut from DIR",
    )  # fmt: skip
    parser.add_argument(
        "--fused", type=float, metavar="W",
        help="sweep on FaceNet fused with dlib's ResNet, dlib's share of the cosine W (needs --cache)",
    )  # fmt: skip
    add_json_argument(parser)
    parser.add_argument("--precision-floor", type=float, default=0.99)
    parser.add_argument(
        "--f-tie", type=float, default=0.0005,
        help="BCubed F this close to the best is a tie, won by the setting nearer today's defaults",
    )  # fmt: skip
    parser.add_argument(
        "--merged-ceiling", type=float, default=1.0,
        help="and at most this share of the rarely seen people's faces merged into another's person",
    )  # fmt: skip
    args = parser.parse_args()

    data = cached_labelled(args.folder, args.cache, args.pick, args.identity_depth)
    if args.fused is not None:
        if args.cache is None:
            parser.error("--fused needs --cache: dlib's vectors are kept beside it")
        second = with_dlib(data, args.cache.resolve(), Settings().models_dir)
        data["vectors"] = fuse(data["vectors"], second, args.fused)
    print(
        f"{int(data['images'])} photos, {len(data['vectors'])} faces, {int(data['misses'])} photos "
        f"without a face, {len(set(data['labels'].tolist()) - {''})} identities"
    )
    columns = ("algorithm", "link", "match", "vote", "voters", "min", "k", "pair",
               "split", "links", "merge", "slack", "mlink", "partner", "bcubed_p", "bcubed_r",
               "bcubed_f", "pair_p", "pair_r", "pair_f", "frequent_bcubed_f", "rare_unassigned",
               "rare_own", "rare_merged", "persons", "small_p")  # fmt: skip
    # Each size and kind's libraries together, as sweep_library_size.py scores them.
    rng = np.random.default_rng(0)
    smaller = [
        [cut(data, ids) for ids in sets]
        for people in args.libraries_of
        for sets in draw(data, people, 20, rng).values()
    ]
    print(" ".join(f"{c:>9}" for c in columns))
    rows = []
    for params in grid(args):
        result = score(data, persons_for(data, params))
        small_p = min((score_libraries(libs, params)["bcubed_p"] for libs in smaller), default=1.0)
        row = {**setting(params), **result, "small_p": small_p}
        rows.append(row)
        print(" ".join(f"{row[c]:>9.3f}" if isinstance(row[c], float) else f"{row[c]:>9}" for c in columns))
        sys.stdout.flush()
    write_json(args.json, rows)
    # The rule the defaults follow: merging two people costs more than a photo left waiting, so
    # the best F among the settings that keep precision at the floor.
    precise = [
        r
        for r in rows
        if min(r["bcubed_p"], r["small_p"]) >= args.precision_floor
        and r["rare_merged"] <= args.merged_ceiling
    ]
    if precise:
        best = choose(precise, args.f_tie)
        where = " in the set and in the libraries cut from it" if args.libraries_of else ""
        print(f"chosen (best BCubed F, within {args.f_tie}, with BCubed precision >= "
              f"{args.precision_floor}{where}, rarely seen people's faces merged <= "
              f"{args.merged_ceiling}): "
              + ", ".join(f"{c}={best[c]}" for c in columns[:14]))  # fmt: skip
    else:
        print(f"no setting reaches BCubed precision {args.precision_floor} within the merged ceiling")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
