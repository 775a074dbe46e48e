"""Scores the clustering in smaller libraries cut from a labelled set: the defaults were chosen
on the whole set, and a user's library is often far smaller.

    python scripts/sweep_library_size.py DIR [--identity-depth N] [--cache FILE.db]
                                         [--knobs NAME=VALUE[,NAME=VALUE] ...]
                                         [--people ...] [--libraries N] [--json PATH]

DIR is in `<identity>/...` layout, as for sweep_clustering.py. Libraries of `--people`
identities are cut from it, of two kinds:

- random: identities drawn at random from all of DIR's (in the tuning set, most of them seen
  2-4 times, as acquaintances are in a family's library);
- look-alike: one identity with 5 or more photos and the others whose mean face is most like
  its mean: people as alike as the set holds.

Each library holds every face of its identities' photos (a photo's other faces too,
unlabelled) and is clustered as the first clustering of an empty library, by the product's
planning function, with the defaults and with each `--knobs` set (comma-separated overrides of
ClusterParams' fields). Printed per setting, kind and size: BCubed precision / recall / F over
the libraries' faces together, the worst library's precision, and how many libraries have two
people in one person.
"""

from __future__ import annotations

import argparse

import numpy as np

from face_assets.core.clustering.params import ClusterParams, with_overrides
from face_assets_devtools.harness import add_json_argument, write_json
from face_assets_devtools.labelled import add_labelled_arguments, cached_labelled
from face_assets_devtools.smaller_libraries import cut, draw, score_libraries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_labelled_arguments(parser)
    parser.add_argument(
        "--knobs", nargs="*", default=[], metavar="NAME=VALUE[,NAME=VALUE]",
        help="settings to score beside the defaults, one per argument",
    )  # fmt: skip
    parser.add_argument("--people", type=int, nargs="+", default=[5, 20, 100, 300])
    parser.add_argument("--libraries", type=int, default=20, help="of each kind and size")
    parser.add_argument("--seed", type=int, default=0)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    settings: dict[str, ClusterParams] = {"defaults": ClusterParams()}
    for knobs in args.knobs:
        overrides = dict(knob.partition("=")[::2] for knob in knobs.split(","))
        try:
            settings[knobs] = with_overrides(ClusterParams(), overrides)
        except ValueError as error:
            parser.error(f"--knobs {knobs}: {str(error).splitlines()[0]}")
    data = cached_labelled(args.folder, args.cache, args.pick, args.identity_depth)
    rng = np.random.default_rng(args.seed)
    sets = {people: draw(data, people, args.libraries, rng) for people in args.people}
    rows = []
    print(f"{'setting':24} {'kind':10}  people  BCubed P / R / F        worst P  merged", flush=True)
    for name, params in settings.items():
        for people, kinds in sets.items():
            for kind, identity_sets in kinds.items():
                result = score_libraries([cut(data, ids) for ids in identity_sets], params)
                rows.append({"setting": name, "kind": kind, "people": people, **result})
                shares = " / ".join(f"{result[key]:.4f}" for key in ("bcubed_p", "bcubed_r", "bcubed_f"))
                print(
                    f"{name:24} {kind:10}  {people:6}  {shares}  {result['worst_p']:.4f}  "
                    f"{result['merged']}/{result['libraries']}",
                    flush=True,
                )
    write_json(args.json, {"rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
