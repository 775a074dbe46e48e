"""Compares FaceNet alone with FaceNet fused with a second embedder (dlib's ResNet), on labelled
photos, as persons: what a second look at each face buys where one embedding is not enough.

    pip install -e '.[second-embedder]'
    python scripts/compare_embedders.py DIR [--identity-depth N] [--cache FILE.db]
                                        [--sample-cache FILE2.db]
                                        [--weight 0.8] [--dlib-chips] [--match ...] [--vote ...]
                                        [--pair ...] [--merge ...] [--libraries-of 100 300]
                                        [--json PATH]

DIR is in `<identity>/...` layout, as for sweep_clustering.py; its photos go once through the
product's detection and FaceNet into `--cache`, and dlib's ResNet then embeds the same boxes
(face_assets_devtools/second_embedder.py) on chips cut from RetinaFace's landmarks, or with
`--dlib-chips` by dlib's own 5-point predictor; kept in `<cache>.dlib.npz` (`.dlib-chips.npz`).
Printed:

- speed: ms per face of the dlib network at batch 32 (median of 3) under ONNX Runtime on one
  and two threads, and in dlib itself when `dlib-bin` is installed;
- verification: the share of same-person pairs of labelled faces accepted at the similarity
  that lets in 1e-3, 1e-4 and 1e-5 of the different-person pairs, for FaceNet, dlib and their
  fusion at several weights;
- persons: FaceNet with the defaults, then the fusion at `--weight` with each default threshold
  moved to the cosine that lets in the same share of different people's pairs, raised by each
  `--match`/`--vote`/`--pair`/`--merge` step (the merge step moves merge and split alike).
  Scored as sweep_clustering.py scores (BCubed over the whole set, people with 5+ photos alone,
  rarely seen people merged), the lowest precision in libraries of `--libraries-of` people cut
  from DIR, and BCubed F on the PyPI 5-person sample (with `--sample-cache`, where its
  embeddings are kept). The best F whose precision is 0.99 or more in the set and in the cut
  libraries is marked.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

import numpy as np

from face_assets.core.clustering.params import ClusterParams
from face_assets.core.clustering.vectors import l2_normalize
from face_assets.core.samples import SAMPLE_IDENTITY_DEPTH, celebrity_sample
from face_assets.core.settings import Settings
from face_assets.core.vision.engines import onnxruntime_runner
from face_assets_devtools.harness import add_json_argument, median_ms, write_json
from face_assets_devtools.labelled import add_labelled_arguments, cached_labelled, persons_for
from face_assets_devtools.second_embedder import (
    RESNET,
    dlib_models,
    fuse,
    same_share_threshold,
    true_accepts,
    with_dlib,
)
from face_assets_devtools.smaller_libraries import cut, draw, score_libraries

sys.path.insert(0, str(Path(__file__).parent))
from sweep_clustering import score  # noqa: E402

FALSE_ACCEPTS = (1e-3, 1e-4, 1e-5)
THRESHOLDS = (
    "match_threshold",
    "vote_threshold",
    "pair_threshold",
    "merge_threshold",
    "split_threshold",
    "merge_link",
)


def network_speed(models_dir: Path) -> dict[str, float]:
    """ms per face of the dlib network at batch 32, median of 3 (a chip's content costs nothing)."""
    chips = np.random.default_rng(0).integers(0, 256, (32, 150, 150, 3), dtype=np.uint8)
    paths = dlib_models(models_dir)
    speed = {}
    for threads in (1, 2):
        network = onnxruntime_runner(paths["onnx"], threads=threads)
        speed[f"onnxruntime {threads} thread(s)"] = median_ms(lambda run=network: run(chips), 3) / 32  # type: ignore[arg-type, misc]
    try:
        import dlib
    except ImportError:
        return speed
    own = dlib.face_recognition_model_v1(str(paths[RESNET.name]))
    speed["dlib"] = median_ms(lambda: own.compute_face_descriptor(list(chips)), 3) / 32
    return speed


def labelled_pairs(vectors: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of every pair of labelled faces, and whether the pair is one person."""
    rows = np.flatnonzero(labels != "")
    upper = np.triu_indices(len(rows), 1)
    unit = l2_normalize(vectors[rows])
    names = labels[rows]
    return (unit @ unit.T)[upper], (names[:, None] == names[None, :])[upper]


def moved_params(base: ClusterParams, facenet: np.ndarray, fused: np.ndarray, spread: float) -> ClusterParams:
    """`base` on the fusion: each threshold where it lets in the same share of different
    people's pairs; the knobs that are distances (slack, rise) scaled by the spread."""
    moved = {name: same_share_threshold(getattr(base, name), facenet, fused) for name in THRESHOLDS}
    return dataclasses.replace(
        base, **moved, vote_slack=base.vote_slack * spread, match_rise=base.match_rise * spread
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_labelled_arguments(parser)
    parser.add_argument(
        "--sample-cache",
        type=Path,
        help="also score the PyPI sample, its embeddings kept in this SQLite file",
    )
    parser.add_argument("--weight", type=float, default=0.8, help="dlib's share of the fused cosine")
    parser.add_argument(
        "--dlib-chips", action="store_true",
        help="chips cut by dlib's 5-point predictor (dlib-bin), not from RetinaFace's landmarks",
    )  # fmt: skip
    parser.add_argument("--match", type=float, nargs="+", default=[0.03])
    parser.add_argument("--vote", type=float, nargs="+", default=[0.02, 0.03])
    parser.add_argument("--pair", type=float, nargs="+", default=[0.02])
    parser.add_argument("--merge", type=float, nargs="+", default=[0.0, 0.02, 0.04])
    parser.add_argument("--libraries-of", type=int, nargs="*", default=[100, 300])
    parser.add_argument("--precision-floor", type=float, default=0.99)
    add_json_argument(parser)
    args = parser.parse_args(argv)
    if args.cache is None:
        parser.error("--cache is needed: dlib's vectors are kept beside it")
    models_dir = Settings().models_dir

    data = cached_labelled(args.folder, args.cache, args.pick, args.identity_depth)
    second = with_dlib(data, args.cache.resolve(), models_dir, args.dlib_chips)
    print(f"{len(data['vectors'])} faces, {len(set(data['labels'].tolist()) - {''})} identities")
    sample = None
    if args.sample_cache:
        folder = celebrity_sample(Settings().samples_dir)
        sample = cached_labelled(folder, args.sample_cache, args.pick, SAMPLE_IDENTITY_DEPTH)
        sample_second = with_dlib(sample, args.sample_cache.resolve(), models_dir, args.dlib_chips)

    speed = network_speed(models_dir)
    print("dlib network, ms per face at batch 32: " + ", ".join(f"{k} {v:.1f}" for k, v in speed.items()))
    report: dict[str, object] = {"ms_per_face": speed}
    facenet_pairs, same = labelled_pairs(data["vectors"], data["labels"])
    print("verification: same-person pairs accepted at a share of different-person pairs")
    print(f"{'embedding':16}" + "".join(f"{f:>9.0e}" for f in FALSE_ACCEPTS))
    candidates = {"FaceNet": data["vectors"], "dlib": second}
    candidates |= {f"fused {w}": fuse(data["vectors"], second, w) for w in (0.5, 0.7, 0.8, 0.9)}
    for name, vectors in candidates.items():
        cosines, _ = labelled_pairs(vectors, data["labels"])
        accepted = [true_accepts(cosines, same, f) for f in FALSE_ACCEPTS]
        report[f"verification {name}"] = accepted
        print(f"{name:16}" + "".join(f"{a:>9.4f}" for a in accepted), flush=True)

    fused = {**data, "vectors": fuse(data["vectors"], second, args.weight)}
    fused_pairs, _ = labelled_pairs(fused["vectors"], data["labels"])
    # How far apart one person's and different people's faces lie, in each: the distance knobs scale so.
    spread = float(
        (np.median(fused_pairs[same]) - np.median(fused_pairs[~same]))
        / (np.median(facenet_pairs[same]) - np.median(facenet_pairs[~same]))
    )
    rng = np.random.default_rng(0)
    sets = [s for people in args.libraries_of for s in draw(data, people, 20, rng).values()]
    # Each embedding's libraries and sample, made once for every setting scored on them.
    libraries = {
        name: [[cut(library, ids) for ids in s] for s in sets]
        for name, library in (("FaceNet", data), ("fused", fused))
    }
    samples = {} if sample is None else {
        "FaceNet": sample,
        "fused": {**sample, "vectors": fuse(sample["vectors"], sample_second, args.weight)},
    }  # fmt: skip
    columns = ("match", "vote", "pair", "merge", "bcubed_p", "bcubed_r", "bcubed_f", "frequent_bcubed_f",
               "rare_merged", "small_p", "sample_f")  # fmt: skip
    print(f"\npersons (fused at {args.weight}: thresholds at FaceNet's share of different people, raised by)")
    widths = [max(10, len(c) + 1) for c in columns]
    print(f"{'':8}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    rows = []

    def run(label: str, params: ClusterParams, steps: tuple[float, ...]) -> None:
        library = data if label == "FaceNet" else fused
        result = score(library, persons_for(library, params))
        small = [score_libraries(libs, params)["bcubed_p"] for libs in libraries[label]]
        row = dict(zip(columns[:4], steps, strict=True)) | {k: result[k] for k in columns[4:9]}
        row["small_p"] = min(small, default=1.0)
        if samples:
            row["sample_f"] = score(samples[label], persons_for(samples[label], params))["bcubed_f"]
        row["embedding"] = label
        rows.append(row)
        shown = "".join(f"{row.get(c, float('nan')):>{w}.4f}" for c, w in zip(columns, widths, strict=True))
        print(f"{label:8}{shown}", flush=True)

    run("FaceNet", ClusterParams(), (0.0, 0.0, 0.0, 0.0))
    moved = moved_params(ClusterParams(), facenet_pairs[~same], fused_pairs[~same], spread)
    for steps in itertools.product(args.match, args.vote, args.pair, args.merge):
        match, vote, pair, merge = steps
        if not moved.vote_threshold + vote <= moved.pair_threshold + pair <= 1.0:
            continue  # a pair is held to the vote's threshold at least
        params = dataclasses.replace(
            moved, match_threshold=moved.match_threshold + match,
            vote_threshold=min(moved.vote_threshold + vote, moved.match_threshold + match),
            pair_threshold=moved.pair_threshold + pair, merge_threshold=moved.merge_threshold + merge,
            split_threshold=moved.split_threshold + merge,
        )  # fmt: skip
        run("fused", params, steps)
    precise = [r for r in rows if min(r["bcubed_p"], r["small_p"]) >= args.precision_floor]
    print("small_p to 5 decimals: " + ", ".join(f"{r['small_p']:.5f}" for r in rows))
    for embedding in ("FaceNet", "fused"):
        mine = [r for r in precise if r["embedding"] == embedding]
        if mine:
            best = max(mine, key=lambda r: r["bcubed_f"])
            shown = ", ".join(f"{c}={best[c]:.4f}" for c in columns if c in best)
            print(f"best {embedding} at precision {args.precision_floor}: {shown}")
    report["persons"] = rows
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
