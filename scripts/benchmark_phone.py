"""Phone-size photos through the pipeline, side by side with the models alone, per engine.

    python scripts/benchmark_phone.py FACES [--count 56] [--heic-share 0.25] [--repeats 3]
                                      [--engines onnxruntime,tensorflow] [--json PATH]

FACES is an `<identity>/<photo>` folder of one-face photos (lfw-tune's `persons/`, or the PyPI
sample's `train/`); face_assets_devtools/phone_photos.py (as scripts/phone_photos.py) turns
them into 4032 x 3024 photos (JPEG quality 92, every third turned by EXIF orientation 6, a
seventh of them group shots, `--heic-share` HEIC).
Per engine, medians of `--repeats`:
- models alone: the detector on each photo as the pipeline decodes it for detection, and the
  embedder on every face in full batches; decoding and cropping not timed. The rate the
  pipeline is held against;
- end to end: register, detect (thumbnails and embeddings from the same decode), thumbnails,
  embed through Dagster into a fresh SQLite file, models already loaded: photos/s over the
  steps' time (what the pipeline does) and over the wall time (with Dagster's run set-up);
- ms per photo and per face, and the process's peak resident memory (one process: the peak of
  all engines together).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from face_assets.core.settings import get_settings
from face_assets.core.vision.lazy import quiet_tensorflow
from face_assets.core.vision.models import detector_for, embedder_for
from face_assets.core.vision.photo import decode_photo
from face_assets.core.vision.transforms import embedding_crop
from face_assets.runs import materialize_pipeline
from face_assets_devtools.harness import add_json_argument, peak_rss_mb, step_seconds, write_json
from face_assets_devtools.phone_photos import make_phone_photos

BATCH_STEPS = ("register", "detect", "thumbnails", "embed")


def models_alone(engine: str, photos: list[Path]) -> dict[str, float]:
    """Seconds of detection and of embedding over the photos, decoding not timed."""
    settings = get_settings(engine=engine)
    detector, embedder = detector_for(settings), embedder_for(settings)
    detector.load()
    embedder.load()
    side = getattr(detector, "max_side_px", None)
    warm = decode_photo(photos[0], side).pixels
    detector.detect(warm)  # the first call of a shape builds what it needs
    embedder.embed(np.zeros((embedder.batch_size, embedder.input_px, embedder.input_px, 3), np.float32))
    detect_s, embed_s, faces = 0.0, 0.0, 0
    crops: list[np.ndarray] = []
    for path in photos:
        photo = decode_photo(path, side)
        started = time.perf_counter()
        found = detector.detect(photo.pixels)
        detect_s += time.perf_counter() - started
        crops += [embedding_crop(photo.pixels, face.box_xyxy, embedder.input_px) for face in found]
        faces += len(found)
        while len(crops) >= embedder.batch_size or (crops and path == photos[-1]):
            batch, crops = crops[: embedder.batch_size], crops[embedder.batch_size :]
            started = time.perf_counter()
            embedder.embed(np.stack(batch))
            embed_s += time.perf_counter() - started
    return {"detect_s": detect_s, "embed_s": embed_s, "faces": faces}


def end_to_end(engine: str, folder: Path) -> dict[str, float]:
    """One run of the batch steps on a fresh database: seconds per step and wall seconds."""
    os.environ["FACE_ASSETS_ENGINE"] = engine
    with tempfile.TemporaryDirectory() as tmp:
        instance = dg.DagsterInstance.ephemeral()
        started = time.perf_counter()
        run = materialize_pipeline(
            folder,
            database_url=f"sqlite:///{Path(tmp) / 'phone.db'}",
            thumbnail_dir=Path(tmp) / "thumbnails",
            instance=instance,
            steps=BATCH_STEPS,
        )
        wall = time.perf_counter() - started
        if not run.success:
            raise SystemExit("the end-to-end run failed")
        steps = step_seconds(run, instance)
    return {"wall_s": wall, "steps_s": sum(steps.values()), **{f"step {k}": v for k, v in steps.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("faces", type=Path, help="<identity>/<photo> folder, one face per photo")
    parser.add_argument("--count", type=int, default=56)
    parser.add_argument("--heic-share", type=float, default=0.0)
    parser.add_argument("--group-share", type=float, default=1 / 7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", default="onnxruntime,tensorflow")
    parser.add_argument("--seed", type=int, default=0)
    add_json_argument(parser)
    args = parser.parse_args()
    quiet_tensorflow()
    report: dict[str, Any] = {"photos": args.count, "heic_share": args.heic_share, "engines": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        make_phone_photos(args.faces, folder, args.count, args.group_share, args.heic_share, args.seed)
        photos = sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".heic"))
        report["megabytes"] = round(sum(p.stat().st_size for p in photos) / 1e6, 1)
        for engine in args.engines.split(","):
            alone = [models_alone(engine, photos) for _ in range(args.repeats)]
            runs = [end_to_end(engine, folder) for _ in range(args.repeats)]
            faces = int(alone[0]["faces"])
            models_s = statistics.median(a["detect_s"] + a["embed_s"] for a in alone)
            steps_s = statistics.median(r["steps_s"] for r in runs)
            wall_s = statistics.median(r["wall_s"] for r in runs)
            step_keys = sorted({k for r in runs for k in r if k.startswith("step ")})
            detect_s = statistics.median(a["detect_s"] for a in alone)
            embed_s = statistics.median(a["embed_s"] for a in alone)
            report["engines"][engine] = {
                "faces": faces,
                "models_alone_photos_per_s": round(len(photos) / models_s, 2),
                "detect_ms_per_photo": round(1000 * detect_s / len(photos), 1),
                "embed_ms_per_face": round(1000 * embed_s / max(faces, 1), 2),
                "end_to_end_photos_per_s_steps": round(len(photos) / steps_s, 2),
                "end_to_end_photos_per_s_wall": round(len(photos) / wall_s, 2),
                "end_to_end_over_models_alone": round(models_s / steps_s, 3),
                "end_to_end_ms_per_photo": round(1000 * steps_s / len(photos), 1),
                "step_seconds_median": {
                    k.removeprefix("step "): round(statistics.median(r.get(k, 0.0) for r in runs), 2)
                    for k in step_keys
                },
            }  # fmt: skip
            print(f"{engine}: {json.dumps(report['engines'][engine])}", file=sys.stderr)
    report["peak_rss_mb"] = round(peak_rss_mb())
    engines = list(report["engines"])
    if len(engines) > 1:
        first, rest = report["engines"][engines[0]], report["engines"][engines[1]]
        report[f"{engines[0]}_over_{engines[1]}_models_alone"] = round(
            first["models_alone_photos_per_s"] / rest["models_alone_photos_per_s"], 2
        )
    print(json.dumps(report, indent=1))
    write_json(args.json, report)


if __name__ == "__main__":
    main()
