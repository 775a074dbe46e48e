"""Chooses how the match threshold rises with the number of persons, from labelled photos.

    python scripts/sweep_match_rise.py DIR [--identity-depth N] [--cache FILE.db] [--pick center]
                                       [--synthetic] [--json PATH]

A face joins a person on its own when its similarity to the person's mean reaches the match
threshold. A stranger is compared with every person, so the chance that some other person's
mean reaches the threshold grows with the number of persons: the threshold chosen on a library
of a thousand persons lets ten times as many strangers in at ten thousand. To keep that chance
where the tuning set put it, the threshold must rise with the number of persons as fast as the
impostor tail falls.

This measures that tail on DIR (the tuning set, `--identity-depth 2`; the photos go through the
product's detection and embedding once, `--cache`): every labelled face against the mean of
every other person with 5 or more photos. It fits log10 of the share of such pairs at or above
t with a parabola in t (the tail of a bell), over the thresholds where at least 10 pairs
remain, and prints, for the default match threshold, the threshold that lets as many strangers
in per face at 10, 100 and 1 000 times the reference number of persons. The rise for the first
tenfold is the default of `match_rise`.

`--synthetic` also counts the same pairs in the scale benchmark's synthetic library
(benchmark_scale.py, 100 000 faces), its people drawn to DIR's photo counts: whether strangers
get in there as easily as in real photos.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from face_assets.core.clustering.params import ClusterParams
from face_assets.core.evaluation import FREQUENT
from face_assets_devtools.harness import add_json_argument, write_json
from face_assets_devtools.labelled import add_labelled_arguments, cached_labelled

GRID = np.round(np.arange(0.40, 0.80, 0.01), 2)


def impostor_similarities(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosine similarity of every labelled face to the mean of every other person of FREQUENT+
    faces (float32, one value per pair)."""
    names, identity, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    often = np.flatnonzero(sizes >= FREQUENT)
    means = np.stack([vectors[identity == person].sum(axis=0) for person in often])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    similarity = vectors @ means.T
    return similarity[identity[:, None] != often[None, :]]


def synthetic_like(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Faces of the benchmark's synthetic library, one synthetic person per labelled person with
    as many faces (taken from a synthetic person with at least that many)."""
    from benchmark_scale import synthetic_library

    vectors, identity, _ = synthetic_library(100_000, seed=seed)
    rng = np.random.default_rng(seed)
    order = np.argsort(identity, kind="stable")
    starts = np.searchsorted(identity[order], np.arange(identity.max() + 1))
    sizes = np.bincount(identity)
    rows, names = [], []
    free = np.ones(len(sizes), dtype=bool)
    for name, count in zip(*np.unique(labels, return_counts=True), strict=True):
        pool = np.flatnonzero(free & (sizes >= count))
        if not len(pool):
            raise ValueError(f"no synthetic person of {count} faces left for {name}")
        pool = pool[np.argsort(sizes[pool], kind="stable")[:50]]  # of about its size
        person = int(rng.choice(pool))
        free[person] = False
        rows.append(order[starts[person] : starts[person] + count])
        names += [name] * count
    return vectors[np.concatenate(rows)], np.array(names)


def fit_tail(values: np.ndarray) -> tuple[np.ndarray, list[tuple[float, int, float]]]:
    """Parabola coefficients of log10(share at or above t) and the (t, count, share) rows used."""
    rows = [(float(t), int(np.sum(values >= t)), float(np.mean(values >= t))) for t in GRID]
    used = [row for row in rows if row[1] >= 10]
    if len(used) < 3:
        raise ValueError("fewer than 3 thresholds with 10 impostor pairs: too few labelled photos")
    coefficients = np.polyfit([t for t, _, _ in used], np.log10([s for _, _, s in used]), 2)
    return coefficients, used


def threshold_for(coefficients: np.ndarray, log10_share: float) -> float:
    """The t above the parabola's peak at which the fitted log10 share is `log10_share`."""
    a, b, c = coefficients
    roots = np.roots([a, b, c - log10_share])
    peak = -b / (2 * a)
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9 and r.real >= peak))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_labelled_arguments(parser)
    parser.add_argument("--synthetic", action="store_true", help="the same pairs in the synthetic library")
    add_json_argument(parser)
    args = parser.parse_args()

    data = cached_labelled(args.folder, args.cache, args.pick, args.identity_depth)
    labelled = data["labels"] != ""
    values = impostor_similarities(data["vectors"][labelled], data["labels"][labelled])
    coefficients, used = fit_tail(values)
    print(f"{len(values)} pairs of a face and another person's mean")
    print(f"{'t':>6} {'pairs >= t':>11} {'share':>10} {'fitted':>10}")
    for t, count, share in used:
        print(f"{t:6.2f} {count:11d} {share:10.2e} {10 ** np.polyval(coefficients, t):10.2e}")
    base = ClusterParams().match_threshold
    at_base = float(np.polyval(coefficients, base))
    rises = {f"{10**k}x": threshold_for(coefficients, at_base - k) - base for k in (1, 2, 3)}
    print(f"match threshold {base}: share {10**at_base:.2e}; the same strangers per face at")
    for times, rise in rises.items():
        print(f"  {times:>6} the persons: {base + rise:.3f} (+{rise:.3f})")
    print(f"match_rise (the first tenfold): {rises['10x']:.3f}")
    report: dict[str, object] = {"tail": used, "coefficients": coefficients.tolist(), "rises": rises}
    if args.synthetic:
        synthetic = impostor_similarities(*synthetic_like(data["labels"][labelled]))
        print(f"synthetic library, {len(synthetic)} pairs: share at or above")
        shares = {t: float(np.mean(synthetic >= t)) for t in (0.55, 0.6, 0.65, 0.7)}
        for t, share in shares.items():
            print(f"  {t:.2f}: {share:.2e} (photos: {np.mean(values >= t):.2e})")
        report["synthetic"] = shares
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
