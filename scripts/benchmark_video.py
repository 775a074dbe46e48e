"""Videos: decoding and the whole pipeline on a long clip made from the PyPI sample's photos.

    python scripts/benchmark_video.py [--minutes 10] [--size 1280x720] [--fps 30] [--repeats 3]
                                      [--json PATH]

Makes one H.264 clip (scenes of 20 s, one or two people, slow pans and zooms), then reports,
median of the repeats, at FACE_ASSETS_VIDEO_FPS (default 1 frame per second of video):
- decoding alone: the sampled frames decoded to pixels, in video seconds per wall second;
- end to end: register, detect, thumbnails, embed, tracks, match, cluster through Dagster into a
  fresh SQLite file, models already loaded, in video seconds per wall second;
- the models alone on the same frames (detection of each sampled frame, embedding of its faces
  in full batches), and the end-to-end rate over theirs;
- peak resident memory of the process (the models' included).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np

from face_assets.core.evaluation import labelled_images
from face_assets.core.settings import get_settings
from face_assets.core.vision.lazy import quiet_tensorflow
from face_assets.core.vision.transforms import embedding_crop
from face_assets.core.vision.video import probe_video, sample_frames
from face_assets.resources import FaceModelsResource
from face_assets.runs import materialize_pipeline
from face_assets_devtools.clips import Scene, make_clip
from face_assets_devtools.harness import (
    add_json_argument,
    peak_rss_mb,
    print_report,
    sample_folder,
    write_json,
)


def scenes(minutes: float) -> list[Scene]:
    photos = [path for path, _ in labelled_images(sample_folder())]
    count = max(int(minutes * 3), 1)  # 20 s each
    motions = ("pan", "zoom", "still")
    return [
        Scene(photos[i % len(photos) : i % len(photos) + (1 + i % 2)], 20.0, motions[i % 3])
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    add_json_argument(parser)
    args = parser.parse_args()
    quiet_tensorflow()
    settings = get_settings()
    width, height = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="face-assets-video-"))
    (work / "library").mkdir()
    clip = work / "library" / "long.mp4"
    started = time.perf_counter()
    make_clip(clip, scenes(args.minutes), fps=args.fps, size=(width, height), preset="ultrafast")
    made = time.perf_counter() - started
    length = probe_video(clip).duration_s

    decode = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        frames = sum(1 for _ in sample_frames(clip, settings.video_fps, settings.video_max_frames))
        decode.append(time.perf_counter() - t)

    models = FaceModelsResource()
    detector, embedder = models.get_detector(), models.get_embedder()
    detector.load()
    embedder.load()
    # The models' rate on these frames, warm: the first pass builds their graphs for the shapes.
    for frame in sample_frames(clip, 1.0, 10):
        for found in [detector.detect(frame.image)] * 2:
            if found:
                embedder.embed(np.stack([embedding_crop(frame.image, f.box_xyxy) for f in found]))
    detect_s, embed_s, faces = 0.0, 0.0, 0
    crops: list[np.ndarray] = []

    def embed() -> float:
        # In full batches, as the embedding step does: a call per frame costs a graph per shape.
        t = time.perf_counter()
        for start in range(0, len(crops), settings.embedding_batch_size):
            embedder.embed(np.stack(crops[start : start + settings.embedding_batch_size]))
        crops.clear()
        return time.perf_counter() - t

    for frame in sample_frames(clip, settings.video_fps, settings.video_max_frames):
        t = time.perf_counter()
        found = detector.detect(frame.image)
        detect_s += time.perf_counter() - t
        crops += [embedding_crop(frame.image, f.box_xyxy) for f in found]
        faces += len(found)
        if len(crops) >= 256:
            embed_s += embed()
    embed_s += embed()

    runs, tracks = [], 0
    for index in range(args.repeats):
        url = f"sqlite:///{work / f'bench{index}.db'}"
        t = time.perf_counter()
        run = materialize_pipeline(
            work / "library", database_url=url, thumbnail_dir=work / f"thumbnails{index}",
            instance=dg.DagsterInstance.ephemeral(),
        )  # fmt: skip
        runs.append(time.perf_counter() - t)
        assert run.success
        tracks = int(run.metadata()["face_embeddings"]["video_tracks"])  # type: ignore[arg-type]

    report = {
        "video_seconds": round(length, 1),
        "size": args.size,
        "fps": args.fps,
        "clip_made_s": round(made, 1),
        "sampled_frames": frames,
        "faces": faces,
        "tracks": tracks,
        "decode_s_median": round(statistics.median(decode), 2),
        "decode_video_s_per_s": round(length / statistics.median(decode), 1),
        "models_alone_detect_s": round(detect_s, 2),
        "models_alone_embed_s": round(embed_s, 2),
        "models_alone_s": round(detect_s + embed_s, 2),
        "models_alone_video_s_per_s": round(length / (detect_s + embed_s), 1),
        "end_to_end_s_runs": [round(r, 1) for r in runs],
        "end_to_end_video_s_per_s": round(length / statistics.median(runs), 1),
        "end_to_end_over_models_alone": round((detect_s + embed_s) / statistics.median(runs), 3),
        "peak_rss_mb": round(peak_rss_mb()),
    }
    print_report(report, width=30)
    write_json(args.json, report)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
