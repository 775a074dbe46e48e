"""Face embedder: FaceNet 20180402-114759 through keras-facenet's network, weights offline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from face_assets.core.settings import DEFAULT_EMBEDDING_BATCH, DEFAULT_ENGINE
from face_assets.core.vision import graphs, weights
from face_assets.core.vision.engines import Runner, check_engine
from face_assets.core.vision.lazy import LazyModel, import_tensorflow
from face_assets.core.vision.stub import STUB, StubEmbedder
from face_assets.core.vision.transforms import embedding_crop
from face_assets.core.vision.types import EmbeddingArray, FaceEmbedder, Landmarks, RGBImage


def keras_facenet_runner(graph_path: Path, input_px: int) -> Runner:
    """TensorFlow, the reference: keras-facenet's network carrying the frozen graph's weights."""
    tf = import_tensorflow()

    from face_assets.core.vision.facenet_weights import build_facenet_keras

    model = build_facenet_keras(graph_path)
    # One traced graph for any batch size: eager Keras is ~20x slower per face on CPU.
    infer = tf.function(
        lambda batch: model(batch, training=False),
        autograph=False,
        input_signature=[tf.TensorSpec((None, input_px, input_px, 3), tf.float32)],
    )

    def run(batch: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.asarray(infer(batch))

    return run


class FaceNetEmbedder(LazyModel):
    """512-d, L2-normalised embeddings of 160x160 crops normalised as (x - 127.5) / 128.

    A batch of n faces costs n, not `batch_size`: both engines take any batch size.
    """

    name = "facenet-20180402-114759"
    dim = 512
    input_px = 160

    def __init__(
        self,
        models_dir: Path,
        batch_size: int = DEFAULT_EMBEDDING_BATCH,
        fetch: bool = True,
        engine: str = DEFAULT_ENGINE,
    ) -> None:
        super().__init__()
        self.engine = check_engine(engine)
        self.models_dir = Path(models_dir)
        self.batch_size = batch_size
        self.fetch = fetch
        self._run: Runner | None = None

    def _load(self) -> None:
        if self.engine == "tensorflow":
            graph_path = weights.resolve(weights.FACENET_GRAPH, self.models_dir, fetch=self.fetch)
            self._run = keras_facenet_runner(graph_path, self.input_px)
        else:
            self._run = graphs.graph_runner(graphs.FACENET, self.engine, self.models_dir, fetch=self.fetch)

    def cut(
        self, image: RGBImage, box_xyxy: Sequence[float], landmarks: Landmarks | None
    ) -> NDArray[np.float32]:
        return embedding_crop(image, tuple(box_xyxy), self.input_px)  # type: ignore[arg-type]

    def embed(self, crops: NDArray[np.float32]) -> EmbeddingArray:
        self.load()
        assert self._run is not None, "load() first"
        count = len(crops)
        out = np.empty((count, self.dim), dtype=np.float32)
        for start in range(0, count, self.batch_size):
            chunk = np.ascontiguousarray(crops[start : start + self.batch_size], dtype=np.float32)
            out[start : start + len(chunk)] = self._run(chunk)
        return out


def make_embedder(
    name: str,
    models_dir: Path,
    batch_size: int = DEFAULT_EMBEDDING_BATCH,
    fetch: bool = True,
    engine: str = DEFAULT_ENGINE,
) -> FaceEmbedder:
    """An embedder by its settings name; its `name` is the same on every engine. A tuned model
    (`face-assets finetune`) is its base embedder followed by its projection."""
    check_engine(engine)
    from face_assets.core.tuning.model import is_tuned, load_tuned, read_manifest, resolve_embedder
    from face_assets.core.vision.fused import FUSED, FusedEmbedder

    name = resolve_embedder(name, models_dir)
    if is_tuned(name):
        base = make_embedder(read_manifest(models_dir, name).base, models_dir, batch_size, fetch, engine)
        return load_tuned(models_dir, name, base)
    if name in ("facenet-20180402", FaceNetEmbedder.name):
        return FaceNetEmbedder(models_dir, batch_size=batch_size, fetch=fetch, engine=engine)
    if name in (FUSED, FusedEmbedder.name):
        return FusedEmbedder(FaceNetEmbedder(models_dir, batch_size=batch_size, fetch=fetch, engine=engine))
    if name == STUB:
        return StubEmbedder()
    raise ValueError(f"unknown embedder {name!r}; choose facenet-20180402, {FUSED} or stub")
