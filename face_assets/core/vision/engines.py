"""What runs a model's graph: ONNX Runtime (default), TensorFlow (the reference), OpenVINO.

An engine here only maps one float32 array to the graph's one output array. The detector and
the embedder keep their resizing, padding and decoding to themselves, so two engines can
differ in nothing but the arithmetic of the call. OpenVINO is not a setting: the benchmarks
(scripts/benchmark_engines.py, scripts/match_engines.py) measure it on the same ONNX files when
it is installed. In f32 it is slower than ONNX Runtime; in bfloat16 faster but its boxes and
face counts leave the reference's (docs/benchmarks.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import numpy as np
from numpy.typing import NDArray

from face_assets.core.settings import DEFAULT_ENGINE, EngineName
from face_assets.core.vision.lazy import import_tensorflow

Runner = Callable[[NDArray[np.float32]], NDArray[np.float32]]

ENGINES: tuple[str, ...] = get_args(EngineName)


def check_engine(engine: str) -> EngineName:
    """The engine's name, or a ValueError that lists the ones there are."""
    if engine not in ENGINES:
        raise ValueError(
            f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)} "
            f"(setting FACE_ASSETS_ENGINE, default {DEFAULT_ENGINE})"
        )
    return engine  # type: ignore[return-value]


def cpu_cores() -> int:
    """The cores this process may run on: a container's CPU set, not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def onnxruntime_runner(model: bytes | Path, threads: int | None = None, spinning: bool = False) -> Runner:
    """An ONNX Runtime session on the CPU, all graph optimisations on (the NCHWc layout among
    them: without it RetinaFace takes twice as long).

    One sequential executor with one pool of `threads` (default: every core): measured on two
    cores, a parallel executor (2 x 1 or 2 x 2 threads) was 1.3-2x slower. Idle threads do not
    spin: as fast for the models alone, and the cores go to the decoding thread beside them.
    """
    import onnxruntime as ort

    # tf2onnx writes a Resize attribute ONNX deprecated; ORT warns of it through its default
    # logger at every session, whatever the session's own log level.
    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or cpu_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(batch: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.asarray(session.run(None, {input_name: batch})[0])

    return run


def openvino_runner(model: Path, threads: int | None = None, precision: str = "f32") -> Runner:
    """OpenVINO on the CPU, compiled from the same ONNX file (for the benchmark).

    OpenVINO computes in bfloat16 by default on CPUs that have it (AVX512_BF16, AMX): faster,
    but no longer the same arithmetic as the other engines, so f32 unless asked.
    """
    import openvino as ov

    core = ov.Core()
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads or cpu_cores(),
        "INFERENCE_PRECISION_HINT": precision,
    }
    compiled = core.compile_model(str(model), "CPU", config)
    request = compiled.create_infer_request()

    def run(batch: NDArray[np.float32]) -> NDArray[np.float32]:
        # The request reuses its output buffer on the next call: copy before returning.
        return np.array(request.infer({0: batch})[0], copy=True)

    return run


def tensorflow_graph_runner(graph_def: Any, input_name: str, output_name: str) -> Runner:
    """A frozen TensorFlow graph (a GraphDef) pruned to one input and one output."""
    tf = import_tensorflow()

    def _import() -> None:
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    graph = wrapped.graph
    pruned = wrapped.prune(graph.as_graph_element(input_name), graph.as_graph_element(output_name))

    def run(batch: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.asarray(pruned(tf.convert_to_tensor(batch)).numpy())

    return run
