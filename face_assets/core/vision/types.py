"""Typed seams between the pipeline and the models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

RGBImage = NDArray[np.uint8]  # (height, width, 3)
EmbeddingArray = NDArray[np.float32]  # (n_faces, 512), unit norm

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
    input_px: int

    def load(self) -> None: ...

    def embed(self, crops: NDArray[np.float32]) -> EmbeddingArray:
        """Embeddings of shape (n_faces, 512) for preprocessed crops (n_faces, px, px, 3)."""
        ...
