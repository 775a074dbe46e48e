"""Labelled synthetic photos made from a folder of one-face photos, with their faces' true boxes:
phone-size photos (scripts/phone_photos.py, scripts/benchmark_phone.py, scripts/match_engines.py)
and 12 MP frames of many faces in a grid (scripts/sweep_detection_scale.py,
scripts/match_engines.py).

Phone photos: a background (a blurred, scaled-up corner of an unrelated photo, or a smooth
gradient, with texture and sensor noise) with either one face photo pasted so that the face is
400-900 px wide (a portrait), or 2-5 faces of different people at 150-400 px (a group shot);
JPEG quality 92 (or HEIC), every third stored turned with EXIF orientation 6. The true boxes:
each face photo is detected once at its own size with the product's detector (the settings'
default); photos where it finds other than exactly one face are skipped, and the box found is
carried through the paste's scale and offset. The same seed, faces folder and detector give the
same output.

Frames (`make_frame`): one face of each given width in each cell of a GRID, pasted on the same
backgrounds, then encoded as JPEG quality 92 and decoded, as phones write them.
"""

from __future__ import annotations

import io
import json
import sys
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

PHONE_PX = (4032, 3024)  # width, height of a landscape 12 MP photo as stored
SINGLE_FACE_PX = (400.0, 900.0)
GROUP_FACE_PX = (150.0, 400.0)
GROUP_SIZES = (2, 5)
JPEG_QUALITY = 92
ORIENTATION_TAG = 0x0112
FIRST_SHOT = datetime(2026, 6, 1, 9, 0)
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FaceSource:
    """A face photo with the one face the detector found in it, in its own pixels."""

    path: Path
    identity: str
    pixels: np.ndarray  # RGB uint8
    box: Box

    @property
    def face_width(self) -> float:
        return self.box[2] - self.box[0]


@dataclass
class SourcePool:
    """Face photos of `root` in a seeded order, each detected once when first drawn; photos
    where the detector finds other than one face are skipped (counted in `skipped`)."""

    root: Path
    seed: int = 0
    detector: Any = None  # a FaceDetector; the settings' default when None
    skipped: int = field(default=0, init=False)
    photos: list[tuple[Path, str]] = field(default_factory=list, init=False)
    _next: int = field(default=0, init=False)
    _deferred: deque[FaceSource] = field(default_factory=deque, init=False)
    _found: dict[Path, FaceSource | None] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        from face_assets.core.evaluation import labelled_images

        self.photos = labelled_images(Path(self.root))
        np.random.default_rng(self.seed).shuffle(self.photos)  # type: ignore[arg-type]
        if self.detector is None:
            from face_assets.core.settings import get_settings
            from face_assets.core.vision.models import detector_for

            self.detector = detector_for(get_settings())

    def _source(self, path: Path, identity: str) -> FaceSource | None:
        if path not in self._found:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
            faces = self.detector.detect(pixels)
            if len(faces) != 1:
                self.skipped += 1
                self._found[path] = None
            else:
                self._found[path] = FaceSource(path, identity, pixels, tuple(faces[0].box_xyxy))
        return self._found[path]

    def put_back(self, source: FaceSource) -> None:
        """A drawn photo left unused: the next draw offers it first."""
        self._deferred.appendleft(source)

    def draw(self, exclude: set[str] | frozenset[str] = frozenset()) -> FaceSource:
        """The next usable face photo whose identity is not in `exclude`; every photo is used
        once before any is used again."""
        for _ in range(len(self._deferred)):
            source = self._deferred.popleft()
            if source.identity not in exclude:
                return source
            self._deferred.append(source)
        for _ in range(2 * len(self.photos)):
            if self._next == len(self.photos):
                self._next = 0  # all used: start again, in the same order
            path, identity = self.photos[self._next]
            self._next += 1
            found = self._source(path, identity)
            if found is None:
                continue
            if found.identity in exclude:
                self._deferred.append(found)
                continue
            return found
        raise SystemExit(f"error: {self.root}: no photo with exactly one face for another identity")


def _smooth_field(rng: np.random.Generator, width: int, height: int, cells: tuple[int, int]) -> Image.Image:
    small = rng.integers(0, 256, (cells[1], cells[0], 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def background(
    rng: np.random.Generator, width: int, height: int, unrelated: Path | None = None
) -> Image.Image:
    """A backdrop that is not flat: the blurred, scaled-up corner of `unrelated` (a photo) or a
    smooth two-colour gradient with broad patches, then fine texture and sensor noise."""
    if unrelated is not None:
        with Image.open(unrelated) as opened:
            photo = opened.convert("RGB")
            # A corner, where news photos show the scene behind the person, never the face.
            cw, ch = photo.width // 4, photo.height // 4
            x = int(rng.integers(0, 2)) * (photo.width - cw)
            y = int(rng.integers(0, 2)) * (photo.height - ch)
            corner = photo.crop((x, y, x + cw, y + ch))
        base = corner.resize((width, height), Image.Resampling.BICUBIC)
        base = base.filter(ImageFilter.GaussianBlur(radius=width / 200))
    else:
        ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
        tilt = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
        mix = np.clip(0.7 * ramp + 0.3 * tilt, 0.0, 1.0)
        first, second = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
        gradient = (first * (1 - mix) + second * mix).astype(np.uint8)
        base = Image.blend(Image.fromarray(gradient), _smooth_field(rng, width, height, (6, 4)), 0.35)
    base = Image.blend(base, _smooth_field(rng, width, height, (160, 120)), 0.08)
    # Sensor noise: one seeded tile repeated (a pattern at this scale is invisible, and cheap).
    tile = rng.normal(0.0, 3.0, (512, 512, 3)).astype(np.int16)
    noise = np.tile(tile, (height // 512 + 1, width // 512 + 1, 1))[:height, :width]
    pixels = np.asarray(base, dtype=np.int16) + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def crop_rect(source: FaceSource, context: float) -> tuple[int, int, int, int]:
    """A square around the source's face, `context` times the face's width, inside its photo."""
    x1, y1, x2, y2 = source.box
    side = context * source.face_width
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    height, width = source.pixels.shape[:2]
    left, top = max(int(round(cx - side / 2)), 0), max(int(round(cy - side / 2)), 0)
    right, bottom = min(int(round(cx + side / 2)), width), min(int(round(cy + side / 2)), height)
    return left, top, right, bottom


def placed(
    source: FaceSource, face_px: float, centre: tuple[float, float], context: float
) -> tuple[Box, Box]:
    """Where `paste_face` would put the face: (its box, the pasted rectangle), canvas pixels."""
    left, top, right, bottom = crop_rect(source, context)
    scale = face_px / source.face_width
    size = (max(int(round((right - left) * scale)), 1), max(int(round((bottom - top) * scale)), 1))
    sx, sy = size[0] / (right - left), size[1] / (bottom - top)
    x1, y1, x2, y2 = source.box
    ox = int(round(centre[0] - ((x1 + x2) / 2 - left) * sx))
    oy = int(round(centre[1] - ((y1 + y2) / 2 - top) * sy))
    box = ((x1 - left) * sx + ox, (y1 - top) * sy + oy, (x2 - left) * sx + ox, (y2 - top) * sy + oy)
    return box, (float(ox), float(oy), float(ox + size[0]), float(oy + size[1]))


def paste_face(
    canvas: Image.Image, source: FaceSource, face_px: float, centre: tuple[float, float], context: float
) -> Box:
    """Paste the square around the source's face (`context` x its width) scaled so that the face
    is `face_px` wide with its centre at `centre`, edges feathered; returns the face's box."""
    left, top, right, bottom = crop_rect(source, context)
    box, (ox, oy, ox2, oy2) = placed(source, face_px, centre, context)
    size = (int(ox2 - ox), int(oy2 - oy))
    crop = Image.fromarray(source.pixels[top:bottom, left:right])
    resample = Image.Resampling.LANCZOS if size[0] < crop.width else Image.Resampling.BICUBIC
    patch = crop.resize(size, resample)
    # Feathered edges: a soft border instead of a sharp rectangle; the face itself is untouched.
    ramp = max(int(min(size) * 0.06), 1)
    ys = np.minimum(np.arange(size[1]), np.arange(size[1])[::-1])[:, None]
    xs = np.minimum(np.arange(size[0]), np.arange(size[0])[::-1])[None, :]
    alpha = (np.clip(np.minimum(xs, ys) / ramp, 0.0, 1.0) * 255).astype(np.uint8)
    canvas.paste(patch, (int(ox), int(oy)), Image.fromarray(alpha))
    return box


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _grown(box: Box, by: float) -> Box:
    w, h = box[2] - box[0], box[3] - box[1]
    return box[0] - by * w, box[1] - by * h, box[2] + by * w, box[3] + by * h


def _inside(box: Box, width: int, height: int, margin: float) -> bool:
    return box[0] >= margin and box[1] >= margin and box[2] <= width - margin and box[3] <= height - margin


def compose(
    rng: np.random.Generator, pool: SourcePool, width: int, height: int, group: bool
) -> tuple[Image.Image, list[dict[str, Any]]]:
    """One upright photo: a portrait (one face, 400-900 px) or a group shot (2-5 different
    people, 150-400 px, in a loose row, no face covered by another paste)."""
    unrelated = pool.photos[int(rng.integers(len(pool.photos)))][0] if rng.random() < 0.5 else None
    canvas = background(rng, width, height, unrelated)
    if group:
        count = int(rng.integers(GROUP_SIZES[0], GROUP_SIZES[1] + 1))
        base = rng.uniform(*GROUP_FACE_PX)
        sizes = [float(np.clip(base * rng.uniform(0.8, 1.25), *GROUP_FACE_PX)) for _ in range(count)]
        row = rng.uniform(0.3, 0.6) * height
        context = 1.8
    else:
        sizes = [rng.uniform(*SINGLE_FACE_PX)]
        row = rng.uniform(0.35, 0.55) * height
        context = 2.6
    faces: list[dict[str, Any]] = []
    taken: list[Box] = []
    identities: set[str] = set()
    for face_px in sizes:
        source = pool.draw(exclude=identities)
        for attempt in range(300):
            centre = (rng.uniform(0.1, 0.9) * width, row + rng.normal(0.0, 0.25 * face_px))
            box, rect = placed(source, face_px, centre, context)
            # The face inside the frame, and this paste covering no face pasted before it.
            if _inside(box, width, height, 0.05 * face_px) and not any(
                _overlaps(rect, _grown(other, 0.1)) for other in taken
            ):
                break
            if attempt % 20 == 19:  # crowded: a little smaller, down to the smallest size
                face_px = max(face_px * 0.9, GROUP_FACE_PX[0] if group else SINGLE_FACE_PX[0])
        else:
            pool.put_back(source)
            continue  # no room left: a smaller group
        box = paste_face(canvas, source, face_px, centre, context)
        taken.append(box)
        identities.add(source.identity)
        faces.append({
            "identity": source.identity,
            "source": source.path.relative_to(pool.root).as_posix(),
            "box_xyxy": [round(v, 1) for v in box],
        })  # fmt: skip
    return canvas, faces


def save_photo(upright: Image.Image, path: Path, turned: bool, taken_at: str) -> None:
    """JPEG (or HEIC, by the suffix) at quality 92; `turned`: pixels stored rotated a quarter
    turn counter-clockwise with EXIF orientation 6, which turns them back upright."""
    exif = Image.Exif()
    exif[0x010F] = "face_assets"  # Make
    exif[0x0110] = "phone_photos.py"  # Model
    exif[0x0132] = taken_at  # DateTime
    stored = upright.transpose(Image.Transpose.ROTATE_90) if turned else upright
    exif[ORIENTATION_TAG] = 6 if turned else 1
    if path.suffix == ".heic":
        stored.save(path, format="HEIF", quality=JPEG_QUALITY, exif=exif.tobytes())
    else:
        stored.save(path, format="JPEG", quality=JPEG_QUALITY, exif=exif.tobytes())


def heif_available() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def make_phone_photos(
    faces: Path, out: Path, count: int, group_share: float, heic_share: float, seed: int
) -> dict[str, Any]:
    """Write `count` photos and OUT/labels.json; returns the labels."""
    rng = np.random.default_rng(seed)
    pool = SourcePool(faces, seed=seed)
    if heic_share > 0 and not heif_available():
        print("warning: pillow_heif is not importable; writing JPEG only", file=sys.stderr)
        heic_share = 0.0
    out.mkdir(parents=True, exist_ok=True)
    photos = []
    for n in range(count):
        group = rng.random() < group_share
        turned = n % 3 == 2
        heic = rng.random() < heic_share
        width, height = (PHONE_PX[1], PHONE_PX[0]) if turned else PHONE_PX
        upright, found = compose(rng, pool, width, height, group)
        name = f"IMG_{n + 1:04d}.{'heic' if heic else 'jpg'}"
        taken_at = (FIRST_SHOT + timedelta(minutes=37 * n)).strftime("%Y:%m:%d %H:%M:%S")
        save_photo(upright, out / name, turned, taken_at)
        photos.append({
            "file": name, "width": width, "height": height, "orientation": 6 if turned else 1,
            "kind": "group" if group else "single", "faces": found,
        })  # fmt: skip
        print(f"\r{n + 1}/{count}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    labels = {
        "generator": "scripts/phone_photos.py",
        "seed": seed,
        "faces_folder": str(faces),
        "boxes": "upright pixels (EXIF orientation applied), x1 y1 x2 y2",
        "skipped_sources": pool.skipped,
        "photos": photos,
    }
    (out / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    return labels


# Frames of many faces (scripts/sweep_detection_scale.py): face widths, every one equally often.
BINS_PX = (20, 30, 45, 64, 80, 90, 128, 180, 256, 400)
GRID = (4, 3)  # cells across, down
CONTEXT = 2.2  # the pasted square around a face, in face widths


@dataclass
class Frame:
    pixels: np.ndarray  # upright RGB uint8, as decoded
    boxes: list[Box]
    bins: list[int]


def make_frame(rng: np.random.Generator, pool: SourcePool, bins: list[int]) -> Frame:
    """One 12 MP frame with a face of each width in `bins`, one per grid cell."""
    width, height = PHONE_PX
    unrelated = pool.photos[int(rng.integers(len(pool.photos)))][0] if rng.random() < 0.5 else None
    canvas = background(rng, width, height, unrelated)
    cell_w, cell_h = width // GRID[0], height // GRID[1]
    boxes: list[Box] = []
    identities: set[str] = set()
    for cell, face_bin in enumerate(bins):
        source = pool.draw(exclude=identities)
        identities.add(source.identity)
        face_px = face_bin * rng.uniform(0.95, 1.05)
        cx0, cy0 = (cell % GRID[0]) * cell_w, (cell // GRID[0]) * cell_h
        # The pasted square stays inside its cell: faces never touch each other's pastes.
        _, rect = placed(source, face_px, (0.0, 0.0), CONTEXT)
        slack_x = max(cell_w - (rect[2] - rect[0]), 0.0)
        slack_y = max(cell_h - (rect[3] - rect[1]), 0.0)
        centre = (cx0 - rect[0] + rng.uniform(0, slack_x), cy0 - rect[1] + rng.uniform(0, slack_y))
        boxes.append(paste_face(canvas, source, face_px, centre, CONTEXT))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    pixels = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.uint8)
    return Frame(pixels, boxes, list(bins))
