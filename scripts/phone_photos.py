"""Phone-size photos made from a labelled folder of face photos, with their faces' true boxes.

    python scripts/phone_photos.py FACES OUT [--count 100] [--group-share 0.143] [--heic-share 0]
                                   [--seed 0]

FACES is an `<identity>/<photo>` folder of photos with one face each, roughly centred (lfw-tune's
`persons/`). OUT gets `--count` photos of 4032 x 3024 px (a phone's 12 MP) and `labels.json`.
Each photo is a background (a blurred, scaled-up corner of an unrelated photo, or a smooth
gradient, with texture and sensor noise) with either one face photo pasted so that the face is
400-900 px wide (a portrait), or, for `--group-share` of them, 2-5 faces of different people at
150-400 px (a group shot). Photos are JPEG quality 92; every third is stored turned with EXIF
orientation 6 (upright portrait 3024 x 4032, stored 4032 x 3024, as a phone held upright
writes it), the others orientation 1. `--heic-share` of them are HEIC (same quality and
orientation; about 20 s each to encode here) when `pillow_heif` is importable, else JPEG.

The true boxes: each face photo is detected once at its own size with the product's detector
(the settings' default); photos where it finds other than exactly one face are skipped, and the
box found is carried through the paste's scale and offset. `labels.json` lists, per file, the
upright size, the orientation written, and each face's identity, source photo and upright box.
Output is the same for the same seed, FACES and detector.

The generator is face_assets_devtools/phone_photos.py (`make_phone_photos`, `SourcePool`), which
other scripts use too; this is its command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from face_assets_devtools.phone_photos import make_phone_photos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("faces", type=Path, help="<identity>/<photo> folder, one face per photo")
    parser.add_argument("out", type=Path, help="folder for the photos and labels.json")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--group-share", type=float, default=1 / 7, help="share of group shots")
    parser.add_argument("--heic-share", type=float, default=0.0, help="share written as HEIC")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"error: {args.out} is not empty")
    labels = make_phone_photos(args.faces, args.out, args.count, args.group_share, args.heic_share, args.seed)
    faces = sum(len(photo["faces"]) for photo in labels["photos"])
    groups = sum(photo["kind"] == "group" for photo in labels["photos"])
    print(f"{args.out}: {len(labels['photos'])} photos ({groups} group shots), {faces} faces")


if __name__ == "__main__":
    main()
