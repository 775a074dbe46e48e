"""Face detectors: RetinaFace (MobileNetV2, default) and RetinaFace ResNet50 (optional)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from face_assets.core.settings import (
    DEFAULT_DETECTION_MAX_SIDE_PX,
    DEFAULT_DETECTION_MIN_SCORE,
    DEFAULT_ENGINE,
)
from face_assets.core.vision import graphs, weights
from face_assets.core.vision.engines import Runner, check_engine
from face_assets.core.vision.lazy import LazyModel
from face_assets.core.vision.stub import STUB, StubDetector
from face_assets.core.vision.types import DetectedFace, FaceDetector, RGBImage

logger = logging.getLogger(__name__)

# The graph needs multiples of 32; a coarser grid keeps the number of input shapes small.
_CANVAS_STEP = 128


def _scale_for(height: int, width: int, max_side_px: int, min_side_px: int) -> float:
    """Shrink large photos to `max_side_px`; enlarge tiny ones so small faces stay detectable."""
    longest = max(height, width)
    if longest > max_side_px:
        return max_side_px / longest
    if longest < min_side_px:
        return min_side_px / longest
    return 1.0


def detector_canvas(
    image: RGBImage, max_side_px: int, min_side_px: int, border: float
) -> tuple[NDArray[np.float32], float, int]:
    """The graph's input for `image` (a batch of one), the scale applied and the border added."""
    height, width = image.shape[:2]
    scale = _scale_for(height, width, max_side_px, min_side_px)
    work = image
    if scale != 1.0:
        size = (max(int(round(width * scale)), 1), max(int(round(height * scale)), 1))
        work = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    work_h, work_w = work.shape[:2]
    pad = int(round(border * max(work_h, work_w)))
    # Canvas sizes snap to a coarse grid: every new input shape costs a graph rebuild.
    padded_h = -(-(work_h + 2 * pad) // _CANVAS_STEP) * _CANVAS_STEP
    padded_w = -(-(work_w + 2 * pad) // _CANVAS_STEP) * _CANVAS_STEP
    canvas = np.zeros((1, padded_h, padded_w, 3), dtype=np.float32)
    canvas[0, pad : pad + work_h, pad : pad + work_w] = work
    return canvas, scale, pad


class RetinaFaceMobileNet(LazyModel):
    """RetinaFace with a MobileNetV2 backbone, from the frozen graph in the `retinaface` wheel.

    The graph takes RGB float 0-255 padded to a multiple of 32 and returns rows
    `[x1 y1 x2 y2, 5 x (x, y) landmarks, flag, score]` normalised to the padded size. The
    engine runs only that call; resizing, padding and decoding are the same on every engine.
    """

    name = "retinaface-mobilenetv2"

    def __init__(
        self,
        models_dir: Path,
        min_score: float = DEFAULT_DETECTION_MIN_SCORE,
        max_side_px: int = DEFAULT_DETECTION_MAX_SIDE_PX,
        min_side_px: int = 320,
        border: float = 0.25,
        border_side_px: int = 640,
        fetch: bool = True,
        engine: str = DEFAULT_ENGINE,
    ) -> None:
        super().__init__()
        self.engine = check_engine(engine)
        self.models_dir = Path(models_dir)
        self.min_score = min_score
        self.max_side_px = max_side_px
        self.min_side_px = min_side_px
        # Tight face crops (a face filling the image) are missed without a border around them.
        self.border = border
        self.border_side_px = border_side_px
        self.fetch = fetch
        self._run: Runner | None = None

    def _load(self) -> None:
        self._run = graphs.graph_runner(graphs.RETINAFACE, self.engine, self.models_dir, fetch=self.fetch)

    def detect(self, image: RGBImage) -> list[DetectedFace]:
        self.load()
        faces = self._detect_at(image, self.max_side_px, border=0.0)
        if not faces:
            # A face that fills the frame has no context around it and is missed; a second,
            # cheaper look with a border costs time only on images without a face.
            faces = self._detect_at(image, self.border_side_px, border=self.border)
        faces.sort(key=lambda face: (face.box_xyxy[0], face.box_xyxy[1]))
        return faces

    def _detect_at(self, image: RGBImage, max_side_px: int, border: float) -> list[DetectedFace]:
        height, width = image.shape[:2]
        canvas, scale, pad = detector_canvas(image, max_side_px, self.min_side_px, border)
        padded_h, padded_w = canvas.shape[1:3]
        assert self._run is not None, "load() first"
        rows = self._run(canvas).reshape(-1, 16)
        faces = []
        for row in rows[rows[:, 15] >= self.min_score]:
            points = row[:14].reshape(7, 2) * (padded_w, padded_h)
            points = (points - pad) / scale
            points[:, 0] = points[:, 0].clip(0, width)
            points[:, 1] = points[:, 1].clip(0, height)
            x1, y1, x2, y2 = (float(v) for v in points[:2].ravel())
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            landmarks = tuple((float(x), float(y)) for x, y in points[2:])
            faces.append(DetectedFace((x1, y1, x2, y2), float(row[15]), landmarks))
        return faces


def _deepface_weights_path() -> Path:
    home = Path(os.environ.get("DEEPFACE_HOME", str(Path.home())))
    return home / ".deepface" / "weights" / "retinaface.h5"


class RetinaFaceResNet50(LazyModel):
    """RetinaFace ResNet50 through the optional `retina-face` package (slow on CPU).

    That package downloads its weights when online; offline they must already be in place.
    """

    name = "retinaface-resnet50"

    def __init__(self, min_score: float = DEFAULT_DETECTION_MIN_SCORE) -> None:
        super().__init__()
        self.min_score = min_score
        self._model: Any = None

    def _load(self) -> None:
        path = _deepface_weights_path()
        if not path.is_file():
            raise weights.ModelFileError(
                f"model file {path} is missing. The retinaface-resnet50 detector needs the "
                "weights of the `retina-face` package (retinaface.h5) there; they are not on "
                "PyPI. Use the default detector retinaface-mobilenet instead."
            )
        try:
            from retinaface import RetinaFace  # type: ignore[import-not-found]
        except ImportError as error:
            raise weights.ModelFileError(
                "the retinaface-resnet50 detector needs the optional `retina-face` package "
                "(pip install retina-face tf-keras)"
            ) from error
        self._model = RetinaFace.build_model()
        self._detect = RetinaFace.detect_faces

    def detect(self, image: RGBImage) -> list[DetectedFace]:
        self.load()
        found = self._detect(image[:, :, ::-1], threshold=self.min_score, model=self._model)
        faces = []
        for item in found.values() if isinstance(found, dict) else []:
            x1, y1, x2, y2 = (float(v) for v in item["facial_area"])
            marks = item["landmarks"]
            order = ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")
            landmarks = tuple((float(marks[k][0]), float(marks[k][1])) for k in order)
            faces.append(DetectedFace((x1, y1, x2, y2), float(item["score"]), landmarks))
        return faces


def make_detector(
    name: str,
    models_dir: Path,
    min_score: float = DEFAULT_DETECTION_MIN_SCORE,
    max_side_px: int = DEFAULT_DETECTION_MAX_SIDE_PX,
    fetch: bool = True,
    engine: str = DEFAULT_ENGINE,
) -> FaceDetector:
    """A detector by its settings name; nothing is loaded until it is first used. Its `name`
    is the same on every engine: the weights are the same."""
    check_engine(engine)
    if name == "retinaface-mobilenet":
        return RetinaFaceMobileNet(
            models_dir, min_score=min_score, max_side_px=max_side_px, fetch=fetch, engine=engine
        )
    if name == "retinaface-resnet50":
        return RetinaFaceResNet50(min_score=min_score)
    if name == STUB:
        return StubDetector()
    raise ValueError(f"unknown detector {name!r}; choose retinaface-mobilenet, retinaface-resnet50 or stub")
