"""Throughput, per-face latency and memory of the pipeline, on the labelled PyPI sample.

    python scripts/benchmark.py [FOLDER] [--repeats 3] [--json PATH] [--backend postgresql|mariadb]

Reports medians over repeats (the machine is noisy):
- model load seconds (detector, embedder), measured once per process;
- detection ms per image and embedding ms per face (batch 32), models warm;
- models alone images/s: detection of every photo plus embedding of every face in full batches
  (decoding not timed), the rate the pipeline is compared with, in the same process, and the
  seconds of each model;
- end to end images/s: register, detect, thumbnails, embed, cluster through Dagster into a
  fresh SQLite file (or a fresh database on a throwaway server, --backend), database writes
  included, models already loaded;
- seconds per Dagster step of the end-to-end runs, and outside any step (run setup, events);
- peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np

from face_assets.core.evaluation import labelled_images
from face_assets.core.storage.store import FaceStore
from face_assets.core.vision.lazy import quiet_tensorflow
from face_assets.core.vision.transforms import embedding_crop, load_image
from face_assets.resources import FaceModelsResource
from face_assets.runs import materialize_pipeline
from face_assets_devtools.harness import (
    BACKENDS,
    ThrowawayDatabases,
    add_json_argument,
    median_ms,
    peak_rss_mb,
    print_report,
    sample_folder,
    step_seconds,
    write_json,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", nargs="?")
    parser.add_argument("--repeats", type=int, default=3)
    add_json_argument(parser)
    # The application database of the end-to-end runs: the SQLite file, or a throwaway server
    # started on 127.0.0.1 as the tests start it.
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite")
    args = parser.parse_args()
    quiet_tensorflow()
    folder = Path(args.folder) if args.folder else sample_folder()
    photos = (
        [path for path, _ in labelled_images(folder)]
        if not args.folder
        else sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    )

    models = FaceModelsResource()
    detector, embedder = models.get_detector(), models.get_embedder()
    started = time.perf_counter()
    detector.load()
    detector_load = time.perf_counter() - started
    started = time.perf_counter()
    embedder.load()
    embedder_load = time.perf_counter() - started

    # Models alone: detection of every photo, then embedding of every face in full batches,
    # decoding and cropping not timed. This is the rate the pipeline is held against.
    images = [load_image(p) for p in photos[:3]]
    for image in images:
        detector.detect(image)  # warm-up: the first calls build the graph for their shapes
    embedder.embed(np.zeros((1, embedder.input_px, embedder.input_px, 3), np.float32))  # traces it
    detect_ms, crops, sample = [], [], []
    embed_seconds, faces_found = 0.0, 0

    def embed_crops() -> float:
        # In chunks as faces come: a large folder's crops never sit in memory all at once.
        t = time.perf_counter()
        embedder.embed(np.stack(crops))
        sample.extend(crops[: 32 - len(sample)])
        crops.clear()
        return time.perf_counter() - t

    for path in photos:
        image = load_image(path)
        t = time.perf_counter()
        faces = detector.detect(image)
        detect_ms.append(1000 * (time.perf_counter() - t))
        crops += [embedding_crop(image, f.box_xyxy) for f in faces]
        faces_found += len(faces)
        if len(crops) >= 256:
            embed_seconds += embed_crops()
    if crops:
        embed_seconds += embed_crops()
    models_rate = len(photos) / (sum(detect_ms) / 1000 + embed_seconds)
    batch = np.stack((sample * (1 + 32 // max(len(sample), 1)))[:32])
    embed_ms = median_ms(lambda: embedder.embed(batch), max(args.repeats, 3), warm_up=False) / len(batch)

    rates = []
    seconds_of_steps: dict[str, list[float]] = {}
    with ThrowawayDatabases(args.backend) as databases:
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                url = databases.new(Path(tmp) / "bench.db")
                if args.backend != "sqlite":
                    FaceStore.from_url(url, upgrade=True).dispose()  # `face-assets db init`, not timed
                t = time.perf_counter()
                run_instance = dg.DagsterInstance.ephemeral()
                run = materialize_pipeline(
                    folder, database_url=url, thumbnail_dir=Path(tmp) / "thumbnails", instance=run_instance
                )
                wall = time.perf_counter() - t
                rates.append(len(photos) / wall)
                assert run.success
                # Where the time went: each Dagster step, and the rest (run setup, events).
                steps = step_seconds(run, run_instance)
                steps["outside steps"] = wall - sum(steps.values())
                for key, seconds in steps.items():
                    seconds_of_steps.setdefault(key, []).append(seconds)

    report = {
        "backend": args.backend,
        "images": len(photos),
        "faces": faces_found,
        "detector_load_s": round(detector_load, 2),
        "embedder_load_s": round(embedder_load, 2),
        "detect_ms_per_image_median": round(statistics.median(detect_ms), 1),
        "embed_ms_per_face_median": round(embed_ms, 2),
        "end_to_end_images_per_s_median": round(statistics.median(rates), 2),
        "end_to_end_images_per_s_runs": [round(r, 2) for r in rates],
        "models_alone_images_per_s": round(models_rate, 2),
        # Beside the detected_faces and face_embeddings steps below: what the models alone took.
        "models_alone_detect_s": round(sum(detect_ms) / 1000, 2),
        "models_alone_embed_s": round(embed_seconds, 2),
        "end_to_end_over_models_alone": round(statistics.median(rates) / models_rate, 3),
        "step_seconds_median": {k: round(statistics.median(v), 2) for k, v in seconds_of_steps.items()},
        "peak_rss_mb": round(peak_rss_mb(), 0),
    }
    print_report(report)
    write_json(args.json, report)


if __name__ == "__main__":
    main()
