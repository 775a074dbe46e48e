"""The `face-assets` command: the same materialisations as Dagster, from a terminal."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("face_assets")


def _settings() -> Any:
    from face_assets.core.settings import get_settings

    return get_settings()


def cmd_db_init(args: argparse.Namespace) -> int:
    from face_assets.core.storage.engine import make_engine, upgrade_schema

    url = args.database_url or _settings().resolved_database_url()
    engine = make_engine(url)
    changes = upgrade_schema(engine)
    engine.dispose()
    print(f"schema up to date ({len(changes)} changes): {', '.join(changes) or 'nothing to do'}")
    if os.environ.get("DAGSTER_HOME"):
        # The batch `all` (the whole library) lets `dagster asset materialize --partition all` run.
        from face_assets.runs import ensure_all_partition, instance_for_cli

        ensure_all_partition(instance_for_cli())
        print("Dagster batch `all` ready in DAGSTER_HOME")
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from face_assets.core.vision import weights

    models_dir = _settings().models_dir
    for model in (weights.RETINAFACE_MOBILENET, weights.FACENET_GRAPH):
        print(f"{model.name}: {weights.resolve(model, models_dir)}")
    return 0


def _load_models() -> float:
    """Loads both models up front so that load time and throughput are reported apart."""
    from face_assets.resources import FaceModelsResource

    models = FaceModelsResource()
    started = time.perf_counter()
    models.get_detector().load()
    models.get_embedder().load()
    return time.perf_counter() - started


def _print_evaluation(report: dict[str, Any]) -> None:
    print("\nevaluation against folder labels:")
    for key, value in report.items():
        print(f"  {key:22} {value:.4f}" if isinstance(value, float) else f"  {key:22} {value}")


def cmd_run(args: argparse.Namespace) -> int:
    from face_assets.core.storage.store import FaceStore
    from face_assets.runs import materialize_pipeline

    folder = Path(args.folder) if args.folder else None
    if folder is None:
        from face_assets.core.samples import celebrity_sample

        folder = celebrity_sample(_settings().samples_dir)
        print(f"no folder given: using the labelled 5-person sample from PyPI in {folder}")
    if not folder.is_dir():
        print(f"error: {folder} is not a folder", file=sys.stderr)
        return 2
    load_seconds = _load_models()
    started = time.perf_counter()
    result = materialize_pipeline(folder, log_level="INFO" if args.verbose else "WARNING")
    seconds = time.perf_counter() - started
    meta = result.metadata()
    store = FaceStore.from_url(_settings().resolved_database_url())
    counts = store.counts()
    items = int(meta.get("detected_faces", {}).get("media_items", 0))  # type: ignore[call-overload]
    print(f"\n{'person':<24}{'faces':>6}")
    for person in store.person_summary():
        print(f"{person['Name']:<24}{person['faces']:>6}")
    print(f"{'(unassigned)':<24}{counts['faces_embedded'] - counts['faces_assigned']:>6}")
    print(
        f"\nmedia items processed: {items}, faces: {counts['faces']}, persons: {counts['persons']}, "
        f"failed media items: {counts['media_items_failed']}"
    )
    print(f"model load: {load_seconds:.1f} s")
    rate = items / seconds if seconds else 0.0
    print(f"pipeline: {seconds:.1f} s for {items} media items = {rate:.2f} images/s end to end")
    for error in store.extraction_errors()[:20]:
        print(f"error: media item {error['Id']} ({error['Name']}): {error['ExtractionError']}")
    if not args.folder:
        from face_assets.core.evaluation import labelled_images
        from face_assets.evaluate import score_store

        _print_evaluation(score_store(store, labelled_images(folder), "largest"))
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from face_assets.core.thumbnail import save_jpeg
    from face_assets.core.vision.transforms import MediaDecodeError, load_image, square_thumbnail
    from face_assets.resources import FaceModelsResource

    image_path = Path(args.image)
    try:
        image = load_image(image_path)
    except MediaDecodeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    faces = FaceModelsResource().get_detector().detect(image)
    out = Path(args.out)
    print(f"{image_path}: {len(faces)} face(s), image {image.shape[1]}x{image.shape[0]}")
    for index, face in enumerate(faces, start=1):
        target = out / f"{image_path.stem}_face{index}.jpg"
        save_jpeg(square_thumbnail(image, face.box_xyxy, _settings().thumbnail_px), target)
        box = [round(v) for v in face.box_xyxy]
        print(f"  face {index}: box {box} score {face.score:.3f} thumbnail {target}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from face_assets.evaluate import evaluate_folder

    report = evaluate_folder(Path(args.dir), pick=args.pick)
    if args.json:
        print(json.dumps(report))
    else:
        _print_evaluation(report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="face-assets", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    init = db.add_parser("init", help="create or upgrade the tables (idempotent)")
    init.add_argument("--database-url", default="")
    init.set_defaults(func=cmd_db_init)

    models = sub.add_parser("models", help="model files").add_subparsers(dest="models_command", required=True)
    models.add_parser("fetch", help="fetch the model files into the cache").set_defaults(
        func=cmd_models_fetch
    )

    run = sub.add_parser("run", help="register FOLDER and materialise every asset")
    run.add_argument("folder", nargs="?", help="photos to process (default: the PyPI sample)")
    run.set_defaults(func=cmd_run)

    test = sub.add_parser("test", help="detect faces in one image; no database writes")
    test.add_argument("image")
    test.add_argument("--out", default="face-test-thumbnails", help="folder for the thumbnails")
    test.set_defaults(func=cmd_test)

    evaluate = sub.add_parser("evaluate", help="score persons against <identity>/<image> labels")
    evaluate.add_argument("dir")
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--pick", choices=("largest", "center"), default="largest")
    evaluate.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from face_assets.core.vision.lazy import quiet_tensorflow

    quiet_tensorflow()
    try:
        return int(args.func(args))
    except Exception as error:
        known = _user_error(error)
        if known is None:
            raise
        print(f"error: {known}", file=sys.stderr)
        return 2


def _user_error(error: BaseException) -> BaseException | None:
    """The error a user can act on (missing model file, schema, bad folder), unwrapped from
    Dagster's step errors; None for anything else, which keeps its traceback."""
    from face_assets.core.storage.store import SchemaError
    from face_assets.core.vision.weights import ModelFileError

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ModelFileError | SchemaError | NotADirectoryError | FileNotFoundError):
            return seen
        if isinstance(seen, ValueError) and "identity" in str(seen):
            return seen
        seen = seen.__cause__
    return None


if __name__ == "__main__":
    sys.exit(main())
