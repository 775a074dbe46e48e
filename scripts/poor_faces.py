"""What FaceNet makes of poor faces, and the sharpness that tells them: labelled photos shrunk,
blown up again, and embedded.

    python scripts/poor_faces.py DIR [--identity-depth N] [--cache FILE.db] [--pick center]
                                 [--shrink 4 8] [--work DIR] [--json PATH]

Each photo of DIR is shrunk `--shrink`-fold (a box filter, as a small face in a large photo
is) and enlarged back to its size, so that the detector finds its face and the face holds the
detail of one `--shrink` times smaller: on the tuning set's photos (faces of about 95 px), 4
gives faces of about 24 px and 8 of about 12 px, the smallest a group shot or a far background
holds. Every set goes through the product's detection and embedding once (`--cache` for DIR,
`--work` for the shrunk photos and their SQLite files, kept for the next run).

Printed, for each shrink: its faces' similarity to the mean of their person's sharp faces
(people with 5 or more photos), poor faces of different people and of one person compared with
each other, and the sharpness of the thumbnails (`Faces.Sharpness`). The largest shrink's
figures are what the scale benchmark's synthetic poor faces are fitted to (`benchmark_scale.py
--poor`, its POOR_SHAPE). Then the sharpness cut the product's `min_sharpness` takes: of all
faces of every set, the cut below which more faces lose nothing than something, a face losing
something when it reaches `vote_threshold` to its person's mean (the least at which it may
join a person), nothing when it does not (it would only join a person by mistake).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from face_assets_devtools.harness import add_json_argument, write_json
from face_assets_devtools.labelled import add_labelled_arguments, cached_labelled, shrunk_photo


def shrink_folder(source: Path, target: Path, factor: float) -> int:
    """Every JPEG of `source` shrunk `factor`-fold and enlarged back, at the same place under `target`."""
    count = 0
    for path in sorted(source.rglob("*.jpg")):
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        shrunk_photo(Image.open(path).convert("RGB"), factor).save(out, quality=85)
        count += 1
    return count


def measured(
    folder: Path, cache: Path, data: dict[str, np.ndarray]
) -> dict[str, tuple[np.ndarray, str, float]]:
    """The picked face of each labelled photo, by the photo's path under `folder`: its vector,
    its person and its thumbnail's sharpness, as the thumbnails step measures it (variance of
    the Laplacian, `Faces.Sharpness`) from the photo and its box in the SQLite file."""
    from face_assets.core.vision.transforms import square_thumbnail, thumbnail_sharpness

    with sqlite3.connect(cache) as conn:
        boxes = dict(conn.execute('SELECT "Id", "BoundingBox" FROM "Faces"').fetchall())
    found = {}
    for row in np.flatnonzero(data["labels"] != ""):
        pixels = np.asarray(Image.open(data["paths"][row]).convert("RGB"))
        box = json.loads(boxes[int(data["face_ids"][row])])
        path = str(Path(data["paths"][row]).resolve().relative_to(folder.resolve()))
        found[path] = (
            data["vectors"][row],
            str(data["labels"][row]),
            thumbnail_sharpness(pixels, square_thumbnail(pixels, tuple(box)), tuple(box)),
        )
    return found


def own_similarity(sharp: np.ndarray, labels: np.ndarray, vectors: np.ndarray, is_sharp: bool) -> np.ndarray:
    """Each face's cosine to the mean of its person's sharp faces (a sharp face's own left out),
    NaN for people with fewer than 5 photos."""
    names, identity = np.unique(labels, return_inverse=True)
    sums = np.zeros((len(names), sharp.shape[1]))
    np.add.at(sums, identity, sharp)
    means = sums[identity] - (sharp if is_sharp else 0.0)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    similarity = np.einsum("ij,ij->i", vectors, means)
    return np.where(np.bincount(identity)[identity] >= 5, similarity, np.nan)


def sharpness_cut(sharpness: np.ndarray, useful: np.ndarray) -> float:
    """The cut (whole numbers up to 100) below which the most faces lose nothing beyond those
    that lose something."""
    cuts = np.arange(1.0, 101.0)
    gain = [int((~useful & (sharpness < c)).sum()) - int((useful & (sharpness < c)).sum()) for c in cuts]
    return float(cuts[int(np.argmax(gain))])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_labelled_arguments(parser)
    parser.add_argument("--shrink", type=float, nargs="+", default=[4.0, 8.0])
    parser.add_argument(
        "--work",
        type=Path,
        help="where the shrunk photos and their SQLite files go (default: a temporary folder)",
    )
    add_json_argument(parser)
    args = parser.parse_args()
    from face_assets.core.clustering.params import ClusterParams

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        sharp_cache = args.cache or Path(tmp) / "sharp.db"
        sets = {
            "sharp": measured(
                args.folder,
                sharp_cache,
                cached_labelled(args.folder, sharp_cache, args.pick, args.identity_depth),
            )
        }
        for factor in args.shrink:
            shrunk = work / f"shrunk-{factor:g}"
            if not shrunk.exists():
                shrink_folder(args.folder, shrunk, factor)
            cache = work / f"shrunk-{factor:g}.db"
            sets[f"{factor:g}-fold"] = measured(
                shrunk, cache, cached_labelled(shrunk, cache, args.pick, args.identity_depth)
            )
    from benchmark_scale import shape_of_poor  # a script beside this one: found when run as one

    both = sorted(set.intersection(*(set(found) for found in sets.values())))
    print(f"{len(sets['sharp'])} labelled photos; a face found in every set for {len(both)}")
    labels = np.array([sets["sharp"][p][1] for p in both])
    sharp = np.stack([sets["sharp"][p][0] for p in both])
    report: dict[str, Any] = {"faces": len(both), "sets": {}}
    every_sharpness, every_useful = [], []
    vote = ClusterParams().vote_threshold
    print(
        f"{'set':>8} {'own_median':>11} {'own_p10':>8} {'different':>10} {'same':>6}   "
        "sharpness 1st / 5th / 50th / 95th"
    )
    for name, found in sets.items():
        vectors = np.stack([found[p][0] for p in both])
        values = np.array([found[p][2] for p in both])
        similarity = own_similarity(sharp, labels, vectors, name == "sharp")
        known = ~np.isnan(similarity)
        every_sharpness.append(values[known])
        every_useful.append(similarity[known] >= vote)
        shape = shape_of_poor(
            np.vstack([sharp, vectors]),
            np.r_[labels, labels],
            np.r_[np.zeros(len(both), bool), np.ones(len(both), bool)],
        )
        if name == "sharp":  # a sharp face against the others' mean, not its own copy
            shape["own_median"], shape["own_p10"] = (
                float(np.nanmedian(similarity)),
                float(np.nanpercentile(similarity, 10)),
            )
        percentiles = np.percentile(values, [1, 5, 50, 95]).tolist()
        report["sets"][name] = {"shape": shape, "sharpness": percentiles}
        print(
            f"{name:>8} {shape['own_median']:>11.3f} {shape['own_p10']:>8.3f} "
            f"{shape['poor_different']:>10.3f} {shape['poor_same']:>6.3f}   "
            + " / ".join(f"{v:.0f}" for v in percentiles)
        )
    sharpness, useful = np.concatenate(every_sharpness), np.concatenate(every_useful)
    cut = sharpness_cut(sharpness, useful)
    below = sharpness < cut
    print(
        f"min_sharpness {cut:g}: below it {int((~useful & below).sum())} faces under vote_threshold "
        f"{vote:g} to their person's mean and {int((useful & below).sum())} at or above it, "
        f"of {len(sharpness)}"
    )
    for name, values in zip(sets, every_sharpness, strict=True):
        print(f"  {name:>8}: {100 * (values < cut).mean():.1f} % below")
    report["min_sharpness"] = cut
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
