"""FaceNet fused with dlib's ResNet: each face seen by two networks trained on different photos,
their unit vectors side by side, weighted so that the fused cosine is 0.2 x FaceNet's + 0.8 x
dlib's (dlib's cosines spread a quarter as wide: about equal say). Every rule on cosines works
on the fusion unchanged; only the thresholds move (clustering/params.py, defaults_for).

dlib's network runs under ONNX Runtime, rebuilt from its file (dlib_resnet.py), on a chip cut
from RetinaFace's five landmarks: no dlib runs. Measured on the tuning set (docs/persons.md):
at 1e-4 of different people's pairs let in, 0.944 of same-person pairs accepted against
FaceNet's 0.882, for 3.4 ms more per face.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from face_assets.core.clustering.vectors import l2_normalize
from face_assets.core.vision.dlib_resnet import CHIP_SIZE, chip, resnet_onnx
from face_assets.core.vision.embedding import FaceNetEmbedder
from face_assets.core.vision.engines import Runner, onnxruntime_runner
from face_assets.core.vision.lazy import LazyModel
from face_assets.core.vision.transforms import embedding_crop
from face_assets.core.vision.types import EmbeddingArray, Landmarks, RGBImage

FUSED = "facenet+dlib"  # the setting
DLIB_WEIGHT = 0.8  # dlib's share of the fused cosine: the best of 0.5-0.9 at 1e-4 and 1e-5
DLIB_DIM = 128
# Where RetinaFace puts the five landmarks in its box, as shares of its width and height (median
# over the tuning set's faces, made symmetric): a face stored without landmarks (a legacy tool's)
# is aligned by its box alone.
LANDMARKS_IN_BOX = np.array([[0.27, 0.40], [0.73, 0.40], [0.50, 0.58], [0.31, 0.745], [0.69, 0.745]])


def fuse(
    facenet: NDArray[np.floating], dlib: NDArray[np.floating], weight: float = DLIB_WEIGHT
) -> EmbeddingArray:
    """Unit vectors whose cosine is (1 - weight) x FaceNet's + weight x dlib's."""
    return np.hstack(
        [np.sqrt(1.0 - weight) * l2_normalize(facenet), np.sqrt(weight) * l2_normalize(dlib)]
    ).astype(np.float32)


def landmarks_from_box(box_xyxy: Sequence[float]) -> NDArray[np.float64]:
    """The five landmarks where a face in this box has them, most likely (LANDMARKS_IN_BOX)."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy[:4])
    return np.array([x1, y1]) + LANDMARKS_IN_BOX * np.array([x2 - x1, y2 - y1])


class FusedEmbedder(LazyModel):
    """640-d unit embeddings: FaceNet's 512 and dlib's 128, fused.

    A face's input (`cut`) is one float32 row: FaceNet's 160 px crop, then dlib's 150 px chip,
    flattened, so that a batch of faces stays one array through the pipeline."""

    name = f"{FaceNetEmbedder.name}+dlib-resnet-v1"
    dim = FaceNetEmbedder.dim + DLIB_DIM
    input_px = FaceNetEmbedder.input_px

    def __init__(self, facenet: FaceNetEmbedder) -> None:
        """Beside `facenet`, from its models folder and with its batch size; dlib's network runs
        under ONNX Runtime whatever FaceNet's engine (it has no TensorFlow form)."""
        super().__init__()
        self.facenet = facenet
        self.models_dir, self.batch_size, self.fetch = facenet.models_dir, facenet.batch_size, facenet.fetch
        self._dlib: Runner | None = None

    def _load(self) -> None:
        self.facenet.load()
        self._dlib = onnxruntime_runner(resnet_onnx(self.models_dir, fetch=self.fetch))

    def cut(
        self, image: RGBImage, box_xyxy: Sequence[float], landmarks: Landmarks | None
    ) -> NDArray[np.float32]:
        points = np.asarray(landmarks, dtype=np.float64) if landmarks else landmarks_from_box(box_xyxy)
        crop = embedding_crop(image, tuple(box_xyxy), self.input_px)  # type: ignore[arg-type]
        return np.concatenate([crop.ravel(), chip(image, points).ravel().astype(np.float32)])

    def embed(self, crops: NDArray[np.float32]) -> EmbeddingArray:
        self.load()
        assert self._dlib is not None, "load() first"
        px, size = self.input_px, CHIP_SIZE
        split = px * px * 3
        facenet = self.facenet.embed(crops[:, :split].reshape(-1, px, px, 3))
        chips = crops[:, split:].reshape(-1, size, size, 3).astype(np.uint8)
        dlib = np.empty((len(crops), DLIB_DIM), dtype=np.float32)
        for start in range(0, len(chips), self.batch_size):
            dlib[start : start + self.batch_size] = self._dlib(chips[start : start + self.batch_size])  # type: ignore[arg-type]
        return fuse(facenet, dlib)
