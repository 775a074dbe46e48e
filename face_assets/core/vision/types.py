"""Typed seams between the pipeline and the models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

RGBImage = NDArray[np.uint8]  # (height, width, 3)
EmbeddingArray = NDArray[np.float32]  # (n_faces, the embedder's dim), unit norm
Landmarks = Sequence[Sequence[float]]  # five (x, y) points, LANDMARK_NAMES order

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class DetectedFace:
    """A face found in a media item, in original-image pixels (after EXIF orientation), or in
    a video frame's (after the container's rotation)."""

    box_xyxy: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...]  # five (x, y) points, LANDMARK_NAMES order
    frame: int | None = None  # videos: the frame's number among the decoded frames
    time_s: float | None = None  # videos: the frame's time from the start

    @property
    def width(self) -> float:
        return self.box_xyxy[2] - self.box_xyxy[0]

    @property
    def height(self) -> float:
        return self.box_xyxy[3] - self.box_xyxy[1]


class FaceDetector(Protocol):
    name: str

    def load(self) -> None: ...

    def detect(self, image: RGBImage) -> list[DetectedFace]: ...


class FaceEmbedder(Protocol):
    name: str
    dim: int  # values per embedding
    input_px: int

    def load(self) -> None: ...

    def cut(
        self, image: RGBImage, box_xyxy: Sequence[float], landmarks: Landmarks | None
    ) -> NDArray[np.float32]:
        """One face's input to `embed`, cut from the image it was found in (its landmarks None
        when a legacy tool stored none)."""
        ...

    def embed(self, crops: NDArray[np.float32]) -> EmbeddingArray:
        """Embeddings of shape (n_faces, dim) for the faces' inputs, `cut`'s, stacked."""
        ...
