"""Faster arithmetic for the same weights, held against the TensorFlow reference.

    python scripts/match_engines.py FACES [--phone 56] [--frames 16] [--photos 400] [--json PATH]

The rule a candidate must pass to become the default: on every set, the same number of faces
in every photo as TensorFlow, each TensorFlow face met by a face with IoU >= 0.9, and each
face's embedding (cut from the candidate's own box) with cosine >= 0.999 to TensorFlow's.

Candidates, each a detector arithmetic with FaceNet on ONNX Runtime fp32 unless said:
- `onnxruntime fp32`: the default engine, both models;
- `onnxruntime int8`: RetinaFace statically quantised to int8 (QDQ, weights per channel, the
  convolutions only; activations calibrated on 10 of the phone photos), the CPU's VNNI;
- `openvino f32`, `openvino bf16`: RetinaFace compiled by OpenVINO (when it is installed; not
  a dependency); `openvino bf16, both models` runs FaceNet in bfloat16 too;
- `openvino bf16 + fp32 rerun`: bfloat16, but a photo with a score within 0.03 of the
  threshold is detected again in fp32 (the faces a threshold flip would add or drop).

Sets, all made from FACES (an `<identity>/<photo>` folder, lfw-tune's `persons/`):
- `phone`: photos of 4032 x 3024 as scripts/phone_photos.py writes them, decoded as the
  pipeline decodes them for detection;
- `frames`: 12 MP frames of scripts/sweep_detection_scale.py, 12 faces of 20-400 px each;
  both made by face_assets_devtools/phone_photos.py;
- `photos`: FACES' own photos (every n-th), as they are.

For each: the detector's ms per photo (median; TensorFlow's first, so its warm-up never falls on
a candidate), photos whose face count differs, the IoU of each TensorFlow face with the
candidate's nearest (min, 1st percentile, median) and the cosine of the two embeddings; and
the embedder alone: the cosine of its embeddings of TensorFlow's own crops (boxes play no part).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from face_assets.core.settings import get_settings
from face_assets.core.vision import graphs
from face_assets.core.vision.detection import RetinaFaceMobileNet, detector_canvas
from face_assets.core.vision.embedding import FaceNetEmbedder
from face_assets.core.vision.engines import Runner, onnxruntime_runner, openvino_runner
from face_assets.core.vision.lazy import quiet_tensorflow
from face_assets.core.vision.photo import decode_photo
from face_assets.core.vision.transforms import embedding_crop
from face_assets.core.vision.types import DetectedFace
from face_assets_devtools.harness import add_json_argument, write_json
from face_assets_devtools.phone_photos import BINS_PX, GRID, SourcePool, make_frame, make_phone_photos

MATCH_IOU = 0.9
MATCH_COSINE = 0.999
RERUN_MARGIN = 0.03  # larger than any score difference bfloat16 made on the phone photos
CALIBRATION_PHOTOS = 10


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def int8_detector(models_dir: Path, calibration: list[np.ndarray], out: Path) -> Path:
    """RetinaFace with its convolutions in int8, calibrated on the detector's own canvases."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, _ = graphs.onnx_model(graphs.RETINAFACE, models_dir)
    prepared = out.with_suffix(".pre.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)

    class Canvases(CalibrationDataReader):
        def __init__(self) -> None:
            self.pending = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self.pending, None)
            if image is None:
                return None
            return {graphs.RETINAFACE.input_name: detector_canvas(image, 1600, 320, 0.0)[0]}

    # Only the convolutions: the graph's box decoding broadcasts over the canvas's anchors,
    # which quantised element-wise kernels refuse at other canvas sizes.
    quantize_static(
        str(prepared), str(out), Canvases(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
    )  # fmt: skip
    return out


def rerun_near_threshold(fast: Runner, exact: Runner, min_score: float) -> Runner:
    def run(canvas: np.ndarray) -> np.ndarray:
        rows = fast(canvas)
        scores = rows.reshape(-1, 16)[:, 15]
        if (np.abs(scores - min_score) < RERUN_MARGIN).any():
            run.reruns += 1  # type: ignore[attr-defined]
            return exact(canvas)
        return rows

    run.reruns = 0  # type: ignore[attr-defined]
    return run


def candidates(models_dir: Path, calibration: list[np.ndarray], tmp: Path) -> dict[str, dict[str, Any]]:
    """name -> the detector's and the embedder's runner (None: the engine's own)."""
    detector_onnx, _ = graphs.onnx_model(graphs.RETINAFACE, models_dir)
    facenet_onnx, _ = graphs.onnx_model(graphs.FACENET, models_dir)
    listed: dict[str, dict[str, Any]] = {
        "tensorflow (reference)": {"engine": "tensorflow"},
        "onnxruntime fp32": {"engine": "onnxruntime"},
        "onnxruntime int8": {
            "engine": "onnxruntime",
            "detect": lambda: onnxruntime_runner(int8_detector(models_dir, calibration, tmp / "int8.onnx")),
        },
    }
    try:
        import openvino  # noqa: F401
    except ImportError:
        print("openvino is not installed: its candidates are left out", file=sys.stderr)
        return listed
    exact = lambda: onnxruntime_runner(detector_onnx)  # noqa: E731
    for precision in ("f32", "bf16"):
        detect = lambda p=precision: openvino_runner(detector_onnx, None, p)  # noqa: E731
        listed[f"openvino {precision}"] = {"engine": "onnxruntime", "detect": detect}
    listed["openvino bf16, both models"] = {
        **listed["openvino bf16"],
        "embed": lambda: openvino_runner(facenet_onnx, None, "bf16"),
    }
    listed["openvino bf16 + fp32 rerun"] = {
        "engine": "onnxruntime",
        "detect": lambda: rerun_near_threshold(openvino_runner(detector_onnx, None, "bf16"), exact(), 0.9),
    }
    return listed


def photo_sets(faces: Path, phone: int, frames: int, photos: int, tmp: Path) -> dict[str, list[np.ndarray]]:
    sets: dict[str, list[np.ndarray]] = {}
    if phone:
        folder = tmp / "phone"
        make_phone_photos(faces, folder, phone, 1 / 7, 0.0, 0)
        sets["phone"] = [decode_photo(p, 1600).pixels for p in sorted(folder.glob("*.jpg"))]
    if frames:
        rng = np.random.default_rng(1)
        pool = SourcePool(faces, seed=1)
        per_frame = GRID[0] * GRID[1]
        plan = [BINS_PX[i % len(BINS_PX)] for i in range(frames * per_frame)]
        rng.shuffle(plan)
        bins = [plan[n * per_frame : (n + 1) * per_frame] for n in range(frames)]
        sets["frames"] = [make_frame(rng, pool, b).pixels for b in bins]
    if photos:
        files = sorted(faces.rglob("*.jpg"))
        sets["photos"] = [decode_photo(p, 1600).pixels for p in files[:: max(1, len(files) // photos)]]
    return sets


# faces per photo, their embeddings per photo, ms per photo, embeddings of the reference's crops
Found = tuple[list[list[DetectedFace]], list[np.ndarray], float, np.ndarray]


def run_candidate(
    spec: dict[str, Any], models_dir: Path, images: list[np.ndarray], reference: Found | None
) -> tuple[Found, int]:
    detector = RetinaFaceMobileNet(models_dir, engine=spec["engine"])
    embedder = FaceNetEmbedder(models_dir, engine=spec["engine"])
    detector.load()
    embedder.load()
    make: Callable[[], Runner] | None = spec.get("detect")
    if make is not None:
        detector._run = make()
    if spec.get("embed") is not None:
        embedder._run = spec["embed"]()
    detector.detect(images[0])  # warm-up: a first call builds what each shape needs
    times, faces, embeddings = [], [], []
    for image in images:
        started = time.perf_counter()
        found = detector.detect(image)
        times.append(time.perf_counter() - started)
        faces.append(found)
        crops = [embedding_crop(image, face.box_xyxy, embedder.input_px) for face in found]
        embeddings.append(embedder.embed(np.stack(crops)) if crops else np.zeros((0, 512), np.float32))
    reruns = getattr(detector._run, "reruns", 0)
    # The embedder alone: the reference's own crops, so boxes play no part.
    same_crops = [
        embedding_crop(image, face.box_xyxy, embedder.input_px)
        for image, found in zip(images, reference[0] if reference else faces, strict=True)
        for face in found
    ]
    alone = embedder.embed(np.stack(same_crops)) if same_crops else np.zeros((0, 512), np.float32)
    return (faces, embeddings, 1000 * statistics.median(times), alone), reruns


def compare(reference: Found, candidate: Found) -> dict[str, Any]:
    ious, cosines, counts_differ = [], [], 0
    pairs = zip(reference[0], candidate[0], reference[1], candidate[1], strict=True)
    for ref_faces, faces, ref_emb, emb in pairs:
        counts_differ += len(ref_faces) != len(faces)
        for i, face in enumerate(ref_faces):
            overlaps = [iou(face.box_xyxy, other.box_xyxy) for other in faces]
            if not overlaps:
                ious.append(0.0)
                cosines.append(0.0)
                continue
            j = int(np.argmax(overlaps))
            ious.append(overlaps[j])
            cosines.append(float(ref_emb[i] @ emb[j]))
    iou_a, cos_a = np.array(ious), np.array(cosines)
    alone = np.einsum("ij,ij->i", reference[3], candidate[3]) if len(reference[3]) else np.ones(1)
    return {
        "ms_per_photo": round(candidate[2], 1),
        "photos_with_other_counts": counts_differ,
        "iou_min": round(float(iou_a.min()), 4), "iou_p1": round(float(np.percentile(iou_a, 1)), 4),
        "iou_median": round(float(np.median(iou_a)), 4),
        "cosine_min": round(float(cos_a.min()), 5), "cosine_p1": round(float(np.percentile(cos_a, 1)), 5),
        "cosine_median": round(float(np.median(cos_a)), 6),
        "faces_below_cosine": int((cos_a < MATCH_COSINE).sum()), "faces": len(ious),
        "embedder_alone_cosine_min": round(float(alone.min()), 6),
        "matches": bool(counts_differ == 0 and iou_a.min() >= MATCH_IOU and cos_a.min() >= MATCH_COSINE),
    }  # fmt: skip


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("faces", type=Path, help="<identity>/<photo> folder, one face per photo")
    parser.add_argument("--phone", type=int, default=56, help="phone photos (0: none)")
    parser.add_argument("--frames", type=int, default=16, help="12 MP frames of 12 faces (0: none)")
    parser.add_argument("--photos", type=int, default=400, help="FACES' own photos (0: none)")
    add_json_argument(parser)
    args = parser.parse_args()
    quiet_tensorflow()
    models_dir = get_settings().models_dir
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sets = photo_sets(args.faces, args.phone, args.frames, args.photos, Path(tmp))
        calibration = sets.get("phone", next(iter(sets.values())))[::4][:CALIBRATION_PHOTOS]
        listed = candidates(models_dir, calibration, Path(tmp))
        for set_name, images in sets.items():
            print(f"{set_name}: {len(images)} photos", file=sys.stderr)
            reference: Found | None = None
            for name, spec in listed.items():
                found, reruns = run_candidate(spec, models_dir, images, reference)
                if reference is None:
                    reference = found
                    report.setdefault(name, {})[set_name] = {"ms_per_photo": round(found[2], 1)}
                    continue
                row = compare(reference, found)
                if "rerun" in name:
                    row["photos_rerun"] = reruns
                report.setdefault(name, {})[set_name] = row
    columns = ("ms_per_photo", "photos_with_other_counts", "iou_min", "iou_median", "cosine_min",
               "cosine_median", "faces_below_cosine", "embedder_alone_cosine_min", "matches")  # fmt: skip
    for name, per_set in report.items():
        for set_name, row in per_set.items():
            cells = " ".join(f"{c}={row[c]}" for c in columns if c in row)
            extra = f" photos_rerun={row['photos_rerun']}" if "photos_rerun" in row else ""
            print(f"{name:28s} {set_name:7s} {cells}{extra}")
    write_json(args.json, report)


if __name__ == "__main__":
    main()
