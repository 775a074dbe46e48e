"""The detector's working scale, chosen by measurement: recall by face size against time per photo.

    python scripts/sweep_detection_scale.py FACES [--frames 40] [--scales 960 1280 1600 2016 1280+tiles]
                                            [--seed 0] [--json PATH]

FACES is an `<identity>/<photo>` folder with one face per photo (lfw-tune's `persons/`). Each
of `--frames` frames of 4032 x 3024 px (a phone's 12 MP) holds 12 faces of different people,
one in each cell of a 4 x 3 grid (so well apart), each pasted at one of the face widths
20, 30, 45, 64, 80, 90, 128, 180, 256, 400 px (+-5 %; every width equally often), on a smooth
background with sensor noise, then encoded as JPEG quality 92 and decoded, as phones write
them (face_assets_devtools/phone_photos.py makes the frames). The true boxes come from
detecting each face photo at its own size.

A candidate `S` is the product's detector with `max_side_px=S`, given the full upright frame
(it shrinks the frame itself; decoding is not timed). `S+tiles` is two passes: the whole frame
at S, then the frame at full resolution in 2 x 2 overlapping tiles, the detections merged
(those cut by a tile's inner edge dropped, then non-maximum suppression). A true face is found
when a detection has IoU >= 0.5 with it (one detection per face; the rest are false
positives). Milliseconds are the median over frames after one warm-up per candidate; the
candidates take turns on each frame, so the machine's load falls on all alike. "shrink" is the
part of it spent resizing the frame to S (timed apart).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from face_assets.core.settings import get_settings
from face_assets.core.vision.detection import make_detector
from face_assets_devtools.harness import add_json_argument, write_json
from face_assets_devtools.phone_photos import BINS_PX, GRID, PHONE_PX, SourcePool, make_frame

GROUP_BINS = (80, 90, 128, 180, 256)  # the face widths of phones' group shots (80-300 px at 12 MP)
MIN_SCORE = 0.9
MATCH_IOU = 0.5
Box = tuple[float, float, float, float]


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(truth: list[Box], found: list[Box]) -> tuple[list[bool], int]:
    """Greedy one-to-one matching by IoU: (each true face found?, false positives)."""
    pairs = sorted(
        ((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True
    )
    hit, used = [False] * len(truth), [False] * len(found)
    for overlap, i, j in pairs:
        if overlap < MATCH_IOU:
            break
        if not hit[i] and not used[j]:
            hit[i] = used[j] = True
    return hit, used.count(False)


def nms(faces: list[tuple[Box, float]], threshold: float = 0.4) -> list[tuple[Box, float]]:
    kept: list[tuple[Box, float]] = []
    for box, score in sorted(faces, key=lambda face: -face[1]):
        if all(iou(box, other) < threshold for other, _ in kept):
            kept.append((box, score))
    return kept


def engine_options() -> dict[str, Any]:
    """The settings' engine (FACE_ASSETS_ENGINE), where this face_assets has engines: the true
    boxes come from the settings' detector, so the candidates run on the same engine."""
    engine = getattr(get_settings(), "engine", None)
    return {} if engine is None else {"engine": engine}


@dataclass
class Candidate:
    """A detector scale, or a scale plus a full-resolution pass in tiles."""

    label: str
    max_side: int
    tiles: bool
    overlap: int
    detector: Any = None
    tile_detector: Any = None
    tile_rects: list[tuple[int, int, int, int]] = field(default_factory=list)

    def load(self, models_dir: Path, width: int, height: int) -> None:
        engine = engine_options()
        self.detector = make_detector("retinaface-mobilenet", models_dir, MIN_SCORE, self.max_side, **engine)
        self.detector.load()
        if self.tiles:
            tile_w, tile_h = (width + self.overlap) // 2, (height + self.overlap) // 2
            self.tile_rects = [
                (x, y, x + tile_w, y + tile_h) for y in (0, height - tile_h) for x in (0, width - tile_w)
            ]
            self.tile_detector = make_detector(
                "retinaface-mobilenet", models_dir, MIN_SCORE, max(tile_w, tile_h), **engine
            )
            self.tile_detector.load()

    def detect(self, image: np.ndarray) -> list[Box]:
        faces = [(face.box_xyxy, face.score) for face in self.detector.detect(image)]
        if not self.tiles:
            return [box for box, _ in faces]
        height, width = image.shape[:2]
        for x1, y1, x2, y2 in self.tile_rects:
            inner = (x1 > 0, y1 > 0, x2 < width, y2 < height)  # edges that cut the frame
            for face in self.tile_detector.detect(image[y1:y2, x1:x2]):
                bx1, by1, bx2, by2 = face.box_xyxy
                cut = (
                    (inner[0] and bx1 < 2) or (inner[1] and by1 < 2)
                    or (inner[2] and bx2 > x2 - x1 - 2) or (inner[3] and by2 > y2 - y1 - 2)
                )  # fmt: skip
                if not cut:
                    faces.append(((bx1 + x1, by1 + y1, bx2 + x1, by2 + y1), face.score))
        return [box for box, _ in nms(faces)]


def parse_candidate(text: str, overlap: int) -> Candidate:
    side, _, extra = text.partition("+")
    if extra not in ("", "tiles"):
        raise argparse.ArgumentTypeError(f"{text!r}: a max side in px, or px+tiles")
    return Candidate(text, int(side), extra == "tiles", overlap)


def shrink_ms(image: np.ndarray, max_side: int) -> float:
    height, width = image.shape[:2]
    scale = min(max_side / max(height, width), 1.0)
    if scale == 1.0:
        return 0.0
    started = time.perf_counter()
    Image.fromarray(image).resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR)
    return (time.perf_counter() - started) * 1000


def sweep(faces: Path, frames: int, candidates: list[Candidate], seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    pool = SourcePool(faces, seed=seed)
    models_dir = get_settings().models_dir
    width, height = PHONE_PX
    for candidate in candidates:
        candidate.load(models_dir, width, height)
    per_frame = GRID[0] * GRID[1]
    plan = [BINS_PX[i % len(BINS_PX)] for i in range(frames * per_frame)]
    rng.shuffle(plan)
    keys = [str(b) for b in BINS_PX]
    results: dict[str, dict[str, Any]] = {
        c.label: {"found": dict.fromkeys(keys, 0), "fp": [], "ms": [], "shrink_ms": []} for c in candidates
    }
    totals = dict.fromkeys(keys, 0)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    for n in range(frames):
        frame = make_frame(rng, pool, plan[n * per_frame : (n + 1) * per_frame])
        for face_bin in frame.bins:
            totals[str(face_bin)] += 1
        turn = candidates[n % len(candidates) :] + candidates[: n % len(candidates)]
        for candidate in turn:
            if n == 0:
                candidate.detect(frame.pixels)  # warm-up: the graph's first run at this shape
            begun = time.perf_counter()
            found = candidate.detect(frame.pixels)
            elapsed = (time.perf_counter() - begun) * 1000
            hit, false_positives = match(frame.boxes, found)
            result = results[candidate.label]
            for face_bin, ok in zip(frame.bins, hit, strict=True):
                result["found"][str(face_bin)] += ok
            result["fp"].append(false_positives)
            result["ms"].append(elapsed)
            result["shrink_ms"].append(shrink_ms(frame.pixels, candidate.max_side))
        print(f"\rframe {n + 1}/{frames}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {
        "frames": frames, "frame_px": [width, height], "faces_per_frame": per_frame, "seed": seed,
        "engine": engine_options().get("engine", "tensorflow"),
        "min_score": MIN_SCORE, "match_iou": MATCH_IOU, "faces_per_bin": totals,
        "skipped_sources": pool.skipped, "seconds": time.perf_counter() - started,
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "candidates": results,
    }  # fmt: skip


def table(report: dict[str, Any]) -> str:
    """The Markdown table: recall by face width, false positives and time per photo."""
    totals = report["faces_per_bin"]
    bins = [str(b) for b in BINS_PX]
    group = [str(b) for b in GROUP_BINS]
    reference = report["candidates"].get("1280") or next(iter(report["candidates"].values()))
    head = [f"{b} px" for b in bins] + [f"{group[0]}-{group[-1]} px", "all", "FP / photo"]
    head += ["ms / photo", "of which shrink", "time / 1280"]
    lines = ["| max side | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for label, result in report["candidates"].items():
        found = result["found"]
        # The time against 1280's on the same frame, median over frames: steadier than ms alone.
        ratio = statistics.median(a / b for a, b in zip(result["ms"], reference["ms"], strict=True))
        cells = [f"{found[b] / totals[b]:.2f}" for b in bins]
        cells += [
            f"{sum(found[b] for b in group) / sum(totals[b] for b in group):.2f}",
            f"{sum(found.values()) / sum(totals.values()):.2f}",
            f"{statistics.mean(result['fp']):.2f}",
            f"{statistics.median(result['ms']):.0f}",
            f"{statistics.median(result['shrink_ms']):.0f}",
            f"{ratio:.2f}",
        ]
        name = label.replace("+tiles", " + full-size 2x2 tiles")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    faces = ", ".join(str(totals[b]) for b in bins)
    lines.append("")
    lines.append(
        f"Recall at IoU >= {MATCH_IOU}; {report['frames']} frames, true faces per width: {faces}; "
        f"engine {report.get('engine', 'tensorflow')}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("faces", type=Path, help="<identity>/<photo> folder, one face per photo")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--scales", nargs="+", default=["960", "1280", "1600", "2016", "1280+tiles"])
    parser.add_argument("--tile-overlap", type=int, default=192, help="px shared by neighbouring tiles")
    parser.add_argument("--seed", type=int, default=0)
    add_json_argument(parser)
    args = parser.parse_args()
    candidates = [parse_candidate(text, args.tile_overlap) for text in args.scales]
    report = sweep(args.faces, args.frames, candidates, args.seed)
    print(table(report))
    print(f"\n{report['seconds']:.0f} s of frames and detection", file=sys.stderr)
    write_json(args.json, report)


if __name__ == "__main__":
    main()
