"""The models alone on each engine: the same weights, the same inputs, one process per setting.

    python scripts/benchmark_engines.py [--repeats 3] [--json PATH] [--quick] [--rounds 1]

Settings measured (each in a fresh process: its own thread pools, TensorFlow's oneDNN switch
read at import): TensorFlow with its own thread choice, with intra=cores/inter=1 and with
oneDNN off; ONNX Runtime as the product runs it (intra=cores, sequential, no spinning), with
spinning and on one thread; OpenVINO on the same ONNX files when `openvino` is importable (not
a dependency), in f32 and in bfloat16, its default on CPUs that have it: faster, but its boxes
and face counts leave TensorFlow's (scripts/match_engines.py holds each arithmetic against the
reference). `--quick` keeps the first setting of each engine.

For each: load seconds (the models ready: ONNX files checked and loaded; their conversion,
once per machine, is measured in a process of its own); RetinaFace ms per photo of 640x640,
960x720, 1280x960 and 1600x1200 pixels on the canvas the detector pads it to (640x640,
1024x768, 1280x1024, 1664x1280), the photo four sample photos in a grid; FaceNet ms per face
at batch 32 and 4; phone photos per second: detection at 1280 px plus 4 faces embedded at
batch 32, and that rate over the first TensorFlow row's. Each figure is the median of
--repeats timed calls after one warm-up call; --rounds > 1 runs every setting again in turn
and keeps, per figure, the least disturbed round (the lowest median: other work on the
machine only ever adds time). The load average is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from face_assets_devtools.harness import add_json_argument, median_ms, sample_folder, write_json

# Photos of these sizes reach the model: 1280 px is the detector's long-standing limit, 1600 px
# the larger one the settings may ask for (FACE_ASSETS_DETECTION_MAX_SIDE_PX).
PHOTO_SIZES = ((640, 640), (960, 720), (1280, 960), (1600, 1200))
FACENET_BATCHES = (32, 4)
FACES_PER_PHOTO = 4  # phone photos: a few people per photo


def _settings_list(cores: int, quick: bool) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = [
        {"label": "tensorflow, TF's own threads", "engine": "tensorflow"},
        {"label": f"tensorflow, intra={cores} inter=1", "engine": "tensorflow", "intra": cores, "inter": 1},
        {"label": "tensorflow, oneDNN off", "engine": "tensorflow", "env": {"TF_ENABLE_ONEDNN_OPTS": "0"}},
        {"label": f"onnxruntime, intra={cores} (product)", "engine": "onnxruntime", "threads": cores},
        {
            "label": f"onnxruntime, intra={cores} spinning",
            "engine": "onnxruntime",
            "threads": cores,
            "spinning": True,
        },
        {"label": "onnxruntime, intra=1", "engine": "onnxruntime", "threads": 1},
    ]
    try:
        import openvino  # noqa: F401
    except ImportError:
        pass
    else:
        listed.append({"label": f"openvino f32, {cores} threads", "engine": "openvino", "threads": cores})
        # Its default on CPUs with bfloat16: faster, other arithmetic (the tests' bounds still hold).
        bf16 = {"label": f"openvino bf16, {cores} threads", "precision": "bf16"}
        listed.append({**listed[-1], **bf16})
    if quick:
        firsts: dict[str, dict[str, Any]] = {}
        for setting in listed:
            firsts.setdefault(setting["engine"], setting)
        listed = list(firsts.values())
    return listed


def _sample_photos() -> list[Path]:
    return sorted(sample_folder().rglob("*.jpg"))


def _grid_photo(photos: list[Path], width: int, height: int) -> np.ndarray:
    """Four sample photos in a 2x2 grid: a photo of `width` x `height` with four faces."""
    from PIL import Image

    from face_assets.core.vision.transforms import load_image

    grid = np.zeros((height, width, 3), dtype=np.uint8)
    half_w, half_h = width // 2, height // 2
    for index, path in enumerate(photos[:4]):
        tile = Image.fromarray(load_image(path)).resize((half_w, half_h), Image.Resampling.BILINEAR)
        top, left = (index // 2) * half_h, (index % 2) * half_w
        grid[top : top + half_h, left : left + half_w] = np.asarray(tile)
    return grid


def _face_crops(photos: list[Path], count: int) -> np.ndarray:
    """FaceNet inputs: the central part of sample photos (portraits), cropped as faces are."""
    from face_assets.core.vision.transforms import embedding_crop, load_image

    crops = []
    for path in photos[:count]:
        image = load_image(path)
        height, width = image.shape[:2]
        side = 0.5 * min(height, width)
        box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
        crops.append(embedding_crop(image, box))
    return np.stack(crops)


def _runners(setting: dict[str, Any], models_dir: Path) -> tuple[Callable[..., Any], Callable[..., Any]]:
    from face_assets.core.vision import engines, graphs, weights
    from face_assets.core.vision.embedding import FaceNetEmbedder, keras_facenet_runner

    engine = setting["engine"]
    if engine == "tensorflow":
        import tensorflow as tf

        if "intra" in setting:
            tf.config.threading.set_intra_op_parallelism_threads(setting["intra"])
            tf.config.threading.set_inter_op_parallelism_threads(setting["inter"])
        detect = graphs.graph_runner(graphs.RETINAFACE, "tensorflow", models_dir)
        # The product's TensorFlow embedder: keras-facenet's network under tf.function.
        facenet_graph = weights.resolve(weights.FACENET_GRAPH, models_dir)
        embed = keras_facenet_runner(facenet_graph, FaceNetEmbedder.input_px)
        return detect, embed
    detector_path, detector_bytes = graphs.onnx_model(graphs.RETINAFACE, models_dir)
    embedder_path, embedder_bytes = graphs.onnx_model(graphs.FACENET, models_dir)
    threads = setting.get("threads")
    if engine == "openvino":
        precision = setting.get("precision", "f32")
        detect = engines.openvino_runner(detector_path, threads, precision)
        return detect, engines.openvino_runner(embedder_path, threads, precision)
    spinning = setting.get("spinning", False)
    return (
        engines.onnxruntime_runner(detector_bytes, threads, spinning),
        engines.onnxruntime_runner(embedder_bytes, threads, spinning),
    )


def measure(setting: dict[str, Any], repeats: int) -> dict[str, Any]:
    """One setting's figures, in this process (the child's side)."""
    from face_assets.core.settings import get_settings
    from face_assets.core.vision.detection import detector_canvas

    models_dir = get_settings().models_dir
    photos = _sample_photos()
    started = time.perf_counter()
    detect, embed = _runners(setting, models_dir)
    figures: dict[str, Any] = {"load_s": time.perf_counter() - started}
    for width, height in PHOTO_SIZES:
        # The canvas the detector builds for such a photo, not shrunk, no border.
        canvas = detector_canvas(_grid_photo(photos, width, height), max(width, height), 320, 0.0)[0]
        figures[f"retinaface {width}x{height} ms"] = median_ms(lambda c=canvas: detect(c), repeats)
    crops = _face_crops(photos, max(FACENET_BATCHES))
    for batch in FACENET_BATCHES:
        chunk = np.ascontiguousarray(crops[:batch])
        figures[f"facenet b{batch} ms/face"] = median_ms(lambda c=chunk: embed(c), repeats) / batch
    return figures


def measure_conversion() -> dict[str, Any]:
    """Seconds to import TensorFlow and tf2onnx, then to convert each graph (nothing written)."""
    from face_assets.core.settings import get_settings
    from face_assets.core.vision import graphs, weights
    from face_assets.core.vision.lazy import quiet_tensorflow

    quiet_tensorflow()
    models_dir = get_settings().models_dir
    started = time.perf_counter()
    import tensorflow  # noqa: F401
    import tf2onnx  # noqa: F401

    figures: dict[str, Any] = {"import tensorflow+tf2onnx s": time.perf_counter() - started}
    for graph in (graphs.RETINAFACE, graphs.FACENET):
        source = weights.resolve(graph.source, models_dir)
        started = time.perf_counter()
        graphs.convert(graph, source)
        figures[f"convert {graph.source.name} s"] = time.perf_counter() - started
    return figures


def _child(payload: dict[str, Any], repeats: int) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **payload.get("env", {})}
    command = [sys.executable, __file__, "--child", json.dumps(payload), "--repeats", str(repeats)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{payload.get('label')}: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _phone_rate(figures: dict[str, Any]) -> float:
    per_photo_ms = figures["retinaface 1280x960 ms"] + FACES_PER_PHOTO * figures["facenet b32 ms/face"]
    return 1000.0 / per_photo_ms


def _table(rows: list[dict[str, Any]]) -> str:
    columns = ["load_s"]
    columns += [f"retinaface {w}x{h} ms" for w, h in PHOTO_SIZES]
    columns += [f"facenet b{b} ms/face" for b in FACENET_BATCHES]
    columns += ["phone photos/s", "x tensorflow"]
    width = max(len(row["label"]) for row in rows)
    lines = [" | ".join([f"{'setting':<{width}}", *columns])]
    for row in rows:
        cells = [f"{row[c]:>{len(c)}.{2 if c.startswith('x ') else 1}f}" for c in columns]
        lines.append(" | ".join([f"{row['label']:<{width}}", *cells]))
    return "\n".join(lines)


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per figure (median)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every setting in turn (best)")
    add_json_argument(parser)
    parser.add_argument("--quick", action="store_true", help="one setting per engine")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        payload = json.loads(args.child)
        figures = measure_conversion() if payload["engine"] == "convert" else measure(payload, args.repeats)
        print(json.dumps(figures))
        return

    from face_assets.core.vision.engines import cpu_cores

    cores = cpu_cores()
    settings = _settings_list(cores, args.quick)
    # Converts once up front if need be, so no setting's load time includes it.
    from face_assets.core.settings import get_settings
    from face_assets.core.vision import graphs

    for graph in (graphs.RETINAFACE, graphs.FACENET):
        graphs.onnx_model(graph, get_settings().models_dir)
    load_before = os.getloadavg()
    rounds: dict[str, list[dict[str, Any]]] = {s["label"]: [] for s in settings}
    for _ in range(args.rounds):
        for setting in settings:
            print(f"measuring {setting['label']}...", file=sys.stderr)
            rounds[setting["label"]].append(_child(setting, args.repeats))
    conversion = _child({"label": "conversion", "engine": "convert"}, args.repeats)
    load_after = os.getloadavg()

    rows = []
    for setting in settings:
        measured = rounds[setting["label"]]
        row: dict[str, Any] = {"label": setting["label"], "engine": setting["engine"]}
        for key in measured[0]:
            row[key] = min(m[key] for m in measured)
        row["phone photos/s"] = _phone_rate(row)
        rows.append(row)
    reference = rows[0]["phone photos/s"]
    for row in rows:
        row["x tensorflow"] = row["phone photos/s"] / reference

    print(f"{cores} cores; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(_table(rows))
    print("conversion (once per machine): " + ", ".join(f"{k} {v:.1f}" for k, v in conversion.items()))
    document = {"cores": cores, "load_average": [load_before[0], load_after[0]], "rows": rows}
    write_json(args.json, {**document, "conversion": conversion})


if __name__ == "__main__":
    main()
