"""What FaceNet makes of poor faces: labelled photos shrunk, blown up again, and embedded.

    python scripts/poor_faces.py DIR [--identity-depth N] [--cache FILE.db] [--pick center]
                                 [--shrink 8] [--poor-folder DIR] [--poor-cache FILE.db] [--json PATH]

Each photo of DIR is shrunk `--shrink`-fold (a box filter, as a small face in a large photo
is) and enlarged back to its size, so that the detector finds its face and the face holds the
detail of one `--shrink` times smaller: on the tuning set's photos (faces of about 95 px), 8
gives faces of about 12 px, the smallest a group shot or a far background holds. Both sets go
through the product's detection and embedding once (`--cache`, and `--poor-cache` with the
shrunk photos in `--poor-folder`, kept for the next run). Printed: the poor faces' similarity
to the mean of their person's sharp faces (people with 5 or more photos), and poor faces of
different people and of one person compared with each other; and the sharpness of both sets'
thumbnails, what tells a poor face. The scale benchmark's synthetic poor faces
(`benchmark_scale.py --poor`) are fitted to these (its POOR_SHAPE).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from face_assets_devtools.harness import add_json_argument, write_json
from face_assets_devtools.labelled import add_labelled_arguments, cached_labelled


def shrink_folder(source: Path, target: Path, factor: float) -> int:
    """Every JPEG of `source` shrunk `factor`-fold and enlarged back, at the same place under `target`."""
    count = 0
    for path in sorted(source.rglob("*.jpg")):
        image = Image.open(path).convert("RGB")
        small = image.resize(
            (max(1, round(image.width / factor)), max(1, round(image.height / factor))), Image.BOX
        )
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        small.resize(image.size, Image.BILINEAR).save(out, quality=85)
        count += 1
    return count


def faces_by_photo(folder: Path, data: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, str]]:
    """The picked face of each labelled photo, by the photo's path under `folder`."""
    labelled = np.flatnonzero(data["labels"] != "")
    return {
        str(Path(data["paths"][row]).resolve().relative_to(folder.resolve())): (
            data["vectors"][row],
            str(data["labels"][row]),
        )
        for row in labelled
    }


def thumbnail_sharpness(cache: Path, data: dict[str, np.ndarray]) -> np.ndarray:
    """Sharpness of each labelled face's thumbnail as the thumbnails step measures it (variance
    of the Laplacian, `Faces.Sharpness`), from its photo and its box in the SQLite file."""
    from face_assets.core.vision.transforms import sharpness, square_thumbnail

    with sqlite3.connect(cache) as conn:
        boxes = dict(conn.execute('SELECT "Id", "BoundingBox" FROM "Faces"').fetchall())
    values = []
    for row in np.flatnonzero(data["labels"] != ""):
        pixels = np.asarray(Image.open(data["paths"][row]).convert("RGB"))
        box = json.loads(boxes[int(data["face_ids"][row])])
        values.append(sharpness(square_thumbnail(pixels, tuple(box))))
    return np.array(values)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_labelled_arguments(parser)
    parser.add_argument("--shrink", type=float, default=8.0)
    parser.add_argument(
        "--poor-folder", type=Path, help="where the shrunk photos go (default: a temporary folder)"
    )
    parser.add_argument("--poor-cache", type=Path, help="SQLite file of the shrunk photos' embeddings")
    add_json_argument(parser)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        sharp_cache = args.cache or Path(tmp) / "sharp.db"
        sharp_data = cached_labelled(args.folder, sharp_cache, args.pick, args.identity_depth)
        shrunk = args.poor_folder or Path(tmp) / "shrunk"
        if not shrunk.exists():
            shrink_folder(args.folder, shrunk, args.shrink)
        poor_cache = args.poor_cache or Path(tmp) / "poor.db"
        poor_data = cached_labelled(shrunk, poor_cache, args.pick, args.identity_depth)
        sharp, poor = faces_by_photo(args.folder, sharp_data), faces_by_photo(shrunk, poor_data)
        sharpness = {
            "sharp": thumbnail_sharpness(sharp_cache, sharp_data),
            "poor": thumbnail_sharpness(poor_cache, poor_data),
        }
    from benchmark_scale import shape_of_poor  # a script beside this one: found when run as one

    both = sorted(set(sharp) & set(poor))
    print(f"{len(sharp)} labelled photos shrunk {args.shrink:g}-fold; a face found in both for {len(both)}")
    vectors = np.stack([sharp[p][0] for p in both] + [poor[p][0] for p in both])
    labels = np.array([sharp[p][1] for p in both] * 2)
    is_poor = np.r_[np.zeros(len(both), dtype=bool), np.ones(len(both), dtype=bool)]
    shape = shape_of_poor(vectors, labels, is_poor)
    print(" ".join(f"{k:>14}" for k in shape))
    print(" ".join(f"{shape[k]:>14.3f}" for k in shape))
    print("thumbnail sharpness, 1st / 5th / 50th / 95th percentile:")
    percentiles = {name: np.percentile(values, [1, 5, 50, 95]).tolist() for name, values in sharpness.items()}
    for name, values in percentiles.items():
        print(f"  {name:>5} faces: " + " / ".join(f"{v:.0f}" for v in values))
    report = {"shrink": args.shrink, "faces": len(both), "poor": shape, "sharpness": percentiles}
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
