"""Photos the stub models (FACE_ASSETS_DETECTOR=stub, FACE_ASSETS_EMBEDDER=stub) see people in:
each identity is one colour, each photo a grey picture with a striped square of that colour at
its own size and place. Laid out like the labelled sample (`train/<identity>/`, `val/<identity>/`), so a
test written for real photos runs on them with the models swapped, in a fraction of the time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Hues far apart: the stub embedder tells colours 10 degrees apart from each other.
COLOURS = ((210, 40, 40), (40, 170, 60), (50, 80, 210), (210, 180, 30), (170, 50, 190), (30, 180, 190))


def stripes(side: int) -> np.ndarray:
    """Lighter and darker rows to add to a square of `side` px, the hue unchanged: a face's
    detail, so that its thumbnail is as sharp as a real face's and the quality gate
    (min_sharpness) lets it in, as a flat square of colour would not be."""
    return np.where((np.arange(side) // 4) % 2 == 0, 20, -20)[:, None, None]


def stub_photo(
    colours: tuple[int, int, int] | list[tuple[int, int, int]],
    rng: np.random.Generator,
    size: tuple[int, int] = (240, 180),
) -> Image.Image:
    """A grey picture (with a little noise, as a camera's) and one square per colour, each in a
    band of its own so that two never touch (no colour: a picture without a face)."""
    width, height = size
    pixels = np.clip(rng.normal(150, 4, (height, width, 3)), 0, 255).astype(np.uint8)
    squares = [colours] if isinstance(colours, tuple) else colours
    band = width // max(1, len(squares))
    for index, colour in enumerate(squares):
        side = int(rng.integers(40, min(90, band - 10)))
        x = index * band + int(rng.integers(5, band - side - 5))
        y = int(rng.integers(5, height - side - 5))
        shade = int(rng.integers(-12, 13))  # brighter or darker, the same hue: the same person
        pixels[y : y + side, x : x + side] = np.clip(np.array(colour) + shade + stripes(side), 0, 255)
    return Image.fromarray(pixels)


def make_stub_people(root: Path, identities: tuple[str, ...], splits: dict[str, int], seed: int = 0) -> Path:
    """`root/<split>/<identity>/<n>.jpg`, `splits[split]` photos per identity; returns root."""
    rng = np.random.default_rng(seed)
    for split, count in splits.items():
        for identity, colour in zip(identities, COLOURS, strict=False):
            folder = root / split / identity
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                stub_photo(colour, rng).save(folder / f"{identity}-{split}-{n:02d}.jpg", quality=92)
    return root
