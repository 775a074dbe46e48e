"""The detector and embedder the settings name, loaded once per process: a run of many steps,
many runs in one worker, or a command line all share them. No Dagster here: the command line
and the resources both come through this."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from face_assets.core.settings import Settings
from face_assets.core.vision.detection import make_detector
from face_assets.core.vision.embedding import make_embedder
from face_assets.core.vision.types import FaceDetector, FaceEmbedder

T = TypeVar("T")

_MODELS: dict[tuple[object, ...], object] = {}
_MODELS_LOCK = threading.Lock()


def _cached(key: tuple[object, ...], build: Callable[[], T]) -> T:
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = build()
        return _MODELS[key]  # type: ignore[return-value]


def detector_for(settings: Settings) -> FaceDetector:
    name, models_dir, min_score = settings.detector, settings.models_dir, settings.detection_min_score
    max_side_px, fetch, engine = settings.detection_max_side_px, not settings.models_offline, settings.engine
    key = ("detector", name, str(models_dir), min_score, max_side_px, fetch, engine)
    return _cached(key, lambda: make_detector(name, models_dir, min_score, max_side_px, fetch, engine))


def embedder_for(settings: Settings) -> FaceEmbedder:
    from face_assets.core.tuning.model import resolve_embedder

    models_dir, batch = settings.models_dir, settings.embedding_batch_size
    name = resolve_embedder(settings.embedder, models_dir)  # before the cache: a new model counts
    fetch, engine = not settings.models_offline, settings.engine
    key = ("embedder", name, str(models_dir), batch, fetch, engine)
    return _cached(key, lambda: make_embedder(name, models_dir, batch, fetch, engine))
