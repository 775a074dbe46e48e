"""A labelled folder of videos and photos, made from a labelled folder of photos, to score videos.

    python scripts/make_video_set.py PHOTOS OUT [--people 60] [--clips 2] [--scenes 3] [--seed 0]
    face-assets evaluate OUT

PHOTOS is an `<identity>/<photo>` folder (the tuning set, the PyPI sample, your own). For each of
`--people` identities with enough photos (chosen at random, `--seed`), OUT/<identity>/ gets
`--clips` videos, each of `--scenes` scenes of a few seconds built from one photo of that person
(a slow pan, a zoom or a still shot, as a phone films), with a scene without anyone between
them, and the person's other photos copied beside them. Every photo goes into at most one clip,
so a person's scenes are different pictures, as their appearances on different days are.

A video is labelled with its one person, and `evaluate` scores each of its face tracks: a person
seen in three scenes of a clip counts three appearances, which must end in one person.
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from face_assets.core.evaluation import labelled_images
from face_assets_devtools.clips import Scene, make_clip

MOTIONS = ("pan", "zoom", "still")
EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def make_video_set(
    photos: Path, out: Path, people: int, clips: int, scenes: int, seed: int, seconds: float = 3.0
) -> dict[str, int]:
    by_identity: dict[str, list[Path]] = {}
    for path, identity in labelled_images(photos):
        by_identity.setdefault(identity, []).append(path)
    needed = clips * scenes + 1  # and at least one photo left over
    eligible = sorted(identity for identity, paths in by_identity.items() if len(paths) >= needed)
    rng = random.Random(seed)
    chosen = rng.sample(eligible, min(people, len(eligible)))
    made = {"identities": 0, "videos": 0, "photos": 0}
    for n, identity in enumerate(sorted(chosen)):
        paths = sorted(by_identity[identity])
        rng.shuffle(paths)
        folder = out / identity
        folder.mkdir(parents=True, exist_ok=True)
        for clip in range(clips):
            picked = paths[clip * scenes : (clip + 1) * scenes]
            shots: list[Scene] = []
            for k, photo in enumerate(picked):
                shots.append(Scene([photo], seconds, MOTIONS[(n + clip + k) % 3]))
                if k < len(picked) - 1:
                    shots.append(Scene([], 1.0, "still"))  # a cut to no one
            suffix = EXTENSIONS[(n + clip) % len(EXTENSIONS)]
            make_clip(folder / f"clip{clip + 1}{suffix}", shots, fps=10, size=(480, 320))
            made["videos"] += 1
        for photo in paths[clips * scenes :]:
            shutil.copy2(photo, folder / photo.name)
            made["photos"] += 1
        made["identities"] += 1
    return made


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("photos", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--people", type=int, default=60)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"error: {args.out} is not empty")
    made = make_video_set(args.photos, args.out, args.people, args.clips, args.scenes, args.seed)
    print(f"{args.out}: {made['identities']} people, {made['videos']} videos, {made['photos']} photos")


if __name__ == "__main__":
    main()
