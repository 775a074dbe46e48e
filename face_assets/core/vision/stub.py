"""Stand-ins for the two models, chosen like them by the settings (FACE_ASSETS_DETECTOR=stub,
FACE_ASSETS_EMBEDDER=stub): instant, deterministic, no model files and no TensorFlow. They let
everything around the models (storage, the Dagster assets, sensors, the command line) be tested
in seconds, and a deployment's plumbing be tried before any weights are fetched.

A "face" is a square of saturated colour on a grey or white picture; its embedding says which
colour it is, so squares of one colour become one person and squares of two colours never do.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from face_assets.core.clustering.vectors import l2_normalize
from face_assets.core.vision.transforms import embedding_crop
from face_assets.core.vision.types import DetectedFace, EmbeddingArray, Landmarks, RGBImage

STUB = "stub"
SATURATION = 60  # a face's pixels: their largest and smallest channel differ by this much
MIN_FACE_PX = 8
HUE_STEPS = 36  # colours 10 degrees apart are different persons
EMBEDDING_DIM = 512
NOISE = 0.1  # the noise's length: no two faces embed identically, yet one colour stays one person


def _landmarks(x1: float, y1: float, w: float, h: float) -> tuple[tuple[float, float], ...]:
    """Eyes, nose, mouth corners where a frontal face has them."""
    at = ((0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8))
    return tuple((x1 + fx * w, y1 + fy * h) for fx, fy in at)


class StubDetector:
    """Each saturated square of at least MIN_FACE_PX on a side is a face (score 0.99)."""

    name = STUB
    loaded = True

    def load(self) -> None:
        pass

    def detect(self, image: RGBImage) -> list[DetectedFace]:
        from scipy import ndimage  # imported when used: most commands never detect

        chroma = image.max(axis=2).astype(np.int16) - image.min(axis=2)
        labels, _ = ndimage.label(chroma >= SATURATION)
        faces = []
        for rows, cols in ndimage.find_objects(labels):
            w, h = cols.stop - cols.start, rows.stop - rows.start
            if min(w, h) < MIN_FACE_PX:
                continue
            x1, y1 = float(cols.start), float(rows.start)
            faces.append(DetectedFace((x1, y1, x1 + w, y1 + h), 0.99, _landmarks(x1, y1, w, h)))
        faces.sort(key=lambda face: (face.box_xyxy[0], face.box_xyxy[1]))
        return faces


def _directions() -> NDArray[np.float32]:
    """One unit vector per hue step and one for no colour; in 512 dimensions nearly orthogonal."""
    vectors = np.random.default_rng(HUE_STEPS).standard_normal((HUE_STEPS + 1, EMBEDDING_DIM))
    return l2_normalize(vectors)


class StubEmbedder:
    """The direction of the crop's hue, plus a little noise drawn from its pixels."""

    name = STUB
    dim = EMBEDDING_DIM
    input_px = 32
    batch_size = 32
    loaded = True

    def __init__(self) -> None:
        self._directions = _directions()

    def load(self) -> None:
        pass

    def cut(
        self, image: RGBImage, box_xyxy: Sequence[float], landmarks: Landmarks | None
    ) -> NDArray[np.float32]:
        return embedding_crop(image, tuple(box_xyxy), self.input_px)  # type: ignore[arg-type]

    def embed(self, crops: NDArray[np.float32]) -> EmbeddingArray:
        out = np.empty((len(crops), EMBEDDING_DIM), dtype=np.float32)
        for index, crop in enumerate(crops):
            pixels = (crop.reshape(-1, 3).astype(np.float64) * 128.0 + 127.5).clip(0, 255)
            coloured = pixels[np.ptp(pixels, axis=1) >= SATURATION]
            if len(coloured):
                hue = colorsys.rgb_to_hsv(*(coloured.mean(axis=0) / 255.0))[0]
                step = int(round(hue * HUE_STEPS)) % HUE_STEPS
            else:
                step = HUE_STEPS
            seed = int(np.abs(pixels).sum() * 1000) % (2**32)
            noise = np.random.default_rng(seed).standard_normal(EMBEDDING_DIM) * (NOISE / EMBEDDING_DIM**0.5)
            out[index] = l2_normalize((self._directions[step] + noise)[None])[0]
        return out
