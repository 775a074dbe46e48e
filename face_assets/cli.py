"""The `face-assets` command: the same materialisations as Dagster, from a terminal."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from face_assets.core.settings import DEFAULT_SENSOR_INTERVAL_S
from face_assets.steps import STEPS

logger = logging.getLogger("face_assets")

# The legacy service's modes, each a set of pipeline steps (see steps.STEPS).
MODES: dict[str, tuple[str, ...]] = {
    "detect": ("detect", "thumbnails"),
    "recognize": ("embed", "match", "cluster", "gallery"),
    "recluster": ("cluster", "gallery"),
    "all": STEPS,
}


# Commands that may create the database; the others refuse one that does not exist yet.
CREATING_COMMANDS = frozenset({"run", "all", "detect", "watch", "automate"})


def _settings() -> Any:
    from face_assets.core.settings import get_settings

    return get_settings()


def cmd_db_init(args: argparse.Namespace) -> int:
    from face_assets.core.storage.connection import safe_url
    from face_assets.core.storage.store import FaceStore

    store = FaceStore.connect(args.database_url or _settings().resolved_database_url())
    changes = store.upgrade()
    store.dispose()
    print(f"database {safe_url(store.engine.url)}")
    print(f"schema up to date ({len(changes)} changes): {', '.join(changes) or 'nothing to do'}")
    if os.environ.get("DAGSTER_HOME"):
        # The batch `all` (the whole library) lets `dagster asset materialize --partition all` run.
        from face_assets.runs import ensure_all_partition, instance_for_cli

        ensure_all_partition(instance_for_cli())
        print("Dagster batch `all` ready in DAGSTER_HOME")
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from face_assets.core.storage.codecs import FUSED_MARK
    from face_assets.core.vision import graphs, weights

    settings = _settings()
    models_dir = settings.models_dir
    for model in (weights.RETINAFACE_MOBILENET, weights.FACENET_GRAPH):
        print(f"{model.name}: {weights.resolve(model, models_dir)}")
    # The ONNX Runtime files too, converted here once, so an offline machine has every file.
    for graph in (graphs.RETINAFACE, graphs.FACENET):
        print(f"{graph.onnx_name}: {graphs.onnx_model(graph, models_dir)[0]}")
    if FUSED_MARK in settings.embedder_model() or args.all:
        from face_assets.core.vision.dlib_resnet import resnet_onnx

        rebuilt = resnet_onnx(models_dir)
        print(f"{rebuilt.name}: {rebuilt}")
    return 0


def _load_models(steps: Sequence[str]) -> float:
    """Loads the models the steps need up front, so load time and throughput are reported apart."""
    from face_assets.core.vision.models import detector_for, embedder_for

    started = time.perf_counter()
    if "detect" in steps:
        detector_for(_settings()).load()
    if "embed" in steps:
        embedder_for(_settings()).load()
    return time.perf_counter() - started


@contextmanager
def _target(dry_run: bool, demo: bool = False) -> Iterator[tuple[str, Path | None, Any]]:
    """(database URL, thumbnail folder or None for the configured one, Dagster instance).

    A dry run works on a scratch copy of the database, with thumbnails and Dagster's records in
    a temporary folder that is deleted afterwards: the real database, thumbnail folder and
    DAGSTER_HOME are only read.
    """
    from face_assets.runs import instance_for_cli

    if demo:
        # The sample never goes into the configured database (a production server, the user's
        # own faces): a demo database of its own, fresh each time, kept to look at afterwards.
        with (
            tempfile.TemporaryDirectory(prefix="face-assets-dry-run-")
            if dry_run
            else nullcontext(str(_demo_dir())) as folder
        ):
            shutil.rmtree(folder, ignore_errors=True)
            Path(folder).mkdir(parents=True)
            yield f"sqlite:///{Path(folder) / 'face_assets.db'}", Path(folder) / "thumbnails", _ephemeral()
        return
    if not dry_run:
        yield _settings().resolved_database_url(), None, instance_for_cli()
        return
    from face_assets.core.storage.scratch import scratch_copy

    with tempfile.TemporaryDirectory(prefix="face-assets-dry-run-") as tmp:
        url = scratch_copy(_settings().resolved_database_url(), Path(tmp))
        yield url, Path(tmp) / "thumbnails", _ephemeral()


def _ephemeral() -> Any:
    import dagster as dg

    return dg.DagsterInstance.ephemeral()


def _demo_dir() -> Path:
    return _settings().data_dir / "demo"


def _run_steps(
    args: argparse.Namespace, steps: Sequence[str], folder: Path | None, demo: bool = False
) -> dict[str, Any]:
    """Materialises `steps` once and prints what changed; returns the counts and timings."""
    from face_assets.core.storage.engine import sqlite_file
    from face_assets.core.storage.store import FaceStore
    from face_assets.runs import materialize_pipeline

    if args.command not in CREATING_COMMANDS:
        _existing_database(_settings().resolved_database_url())
    with _target(args.dry_run, demo) as (url, thumbnails, instance):
        new_file = sqlite_file(url)
        if new_file is not None and not args.dry_run and not new_file.exists():
            print(f"new database: {new_file.resolve()}")
        FaceStore.from_url(url).dispose()  # created (SQLite) or checked before the models load
        load_seconds = _load_models(steps)
        started = time.perf_counter()
        run = materialize_pipeline(
            folder, database_url=url, thumbnail_dir=thumbnails, instance=instance, steps=steps,
            # Without -v the summary below says what happened: Dagster's own lines (a step
            # failure is some 90 lines of stack) stay out of the way of the one-line error.
            log_level="INFO" if args.verbose else "CRITICAL",
            cluster_mode="rebuild" if getattr(args, "rebuild", False) else None,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        store = FaceStore.from_url(url)
        after = store.counts()
        persons = store.person_summary()
        store.dispose()
    meta = run.metadata()
    processed = int(meta.get("detected_faces", {}).get("media_items", 0))  # type: ignore[call-overload]
    prefix = "dry run, nothing written: would have " if args.dry_run else ""
    print(f"{prefix}{_this_run(meta) or 'changed nothing'}")
    print(f"model load: {load_seconds:.1f} s; steps {', '.join(steps)}: {seconds:.1f} s", end="")
    if processed:
        print(f"; {processed} media items = {processed / seconds:.2f} images/s end to end")
    else:
        print()
    _print_problems(meta)
    # Known when the clustering ran: the unassigned faces it left as too poor to compare.
    too_poor = meta.get("person_clusters", {}).get("unassigned_too_poor_to_compare")
    return {"after": after, "persons": persons, "processed": processed, "url": url, "too_poor": too_poor}


# What one run did, from its own materialisations (a count before and after would also show
# what a run beside it did), both ways: what it took away is said as plainly as what it added.
# (words, sign, the (asset, metadata key) pairs that add up to it); the person steps' keys are
# person.PersonChanges.metadata().
_PERSON_STEPS = ("face_persons", "person_clusters")
RUN_CHANGES: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("media items registered", "+", (("media_items", "registered"),)),
    ("files replaced", "", (("media_items", "replaced"),)),
    ("faces of replaced files retired", "-", (("media_items", "faces_retired"),)),
    ("identical copies", "+", (("media_items", "copies"),)),
    ("live photo movies linked", "+", (("media_items", "live_photo_movies"),)),
    ("files missing", "", (("media_items", "missing"),)),
    ("faces detected", "+", (("detected_faces", "faces"),)),
    ("faces embedded", "+", (("detected_faces", "faces_embedded"), ("face_embeddings", "faces_embedded"))),
    ("faces assigned", "+", tuple((step, "faces_assigned") for step in _PERSON_STEPS)),
    ("persons made", "+", tuple((step, "persons_made") for step in _PERSON_STEPS)),
    ("faces moved between persons", "", tuple((step, "faces_moved") for step in _PERSON_STEPS)),
    ("faces unassigned", "-", tuple((step, "faces_unassigned") for step in _PERSON_STEPS)),
    ("persons dissolved", "-", tuple((step, "persons_dissolved") for step in _PERSON_STEPS)),
)


def _this_run(meta: dict[str, dict[str, Any]]) -> str:
    parts = []
    for words, sign, sources in RUN_CHANGES:
        count = sum(int(meta.get(asset, {}).get(key) or 0) for asset, key in sources)
        if count:
            parts.append(f"{words} {sign}{count}")
    return ", ".join(parts)


# Problems of one run printed by name; the rest are counted (all are in the asset metadata).
PRINTED_PROBLEMS = 20


def _print_problems(meta: dict[str, dict[str, Any]]) -> None:
    """This run's skipped files, unreadable and bad media items, each named, on stderr."""
    for asset, key, what, hint in (
        ("media_items", "skipped_files", "skipped", "not registered; the next run looks again"),
        ("media_items", "replaced_files", "replaced", "changed on disk; processed again"),
        ("media_items", "missing_files", "missing", "gone; its faces and persons are kept"),
        ("detected_faces", "unreadable_listed", "unreadable", "stays pending; the next run tries again"),
        ("detected_faces", "errors_listed", "error", "not an image it can read; final"),
    ):
        listed = meta.get(asset, {}).get(key) or {"count": 0, "lines": []}
        count, lines = int(listed["count"]), list(listed["lines"])
        if not count:
            continue
        print(f"{what}: {count} file{'s' if count != 1 else ''} ({hint}):", file=sys.stderr)
        for line in lines[:PRINTED_PROBLEMS]:
            print(f"  {line}", file=sys.stderr)
        if count > PRINTED_PROBLEMS:
            print(f"  ... and {count - PRINTED_PROBLEMS} more (with -v every one is logged)", file=sys.stderr)


def _print_persons(outcome: dict[str, Any]) -> None:
    after = outcome["after"]
    print(f"\n{'person':<24}{'faces':>6}")
    for person in outcome["persons"]:
        print(f"{person['Name']:<24}{person['faces']:>6}")
    print(f"{'(unassigned)':<24}{after['faces_embedded'] - after['faces_assigned']:>6}", end="")
    too_poor = outcome.get("too_poor")
    # Said, as a user otherwise wonders why a face in plain sight is nobody's.
    print(f"  ({too_poor} too small or blurred to compare)" if too_poor else "")
    print(f"media items: {after['media_items']}, faces: {after['faces']}, persons: {after['persons']}\n")


def _print_evaluation(report: dict[str, Any]) -> None:
    print("\nevaluation against folder labels:")
    for key, value in report.items():
        print(f"  {key:22} {value:.4f}" if isinstance(value, float) else f"  {key:22} {value}")


def cmd_run(args: argparse.Namespace) -> int:
    folder = Path(args.folder) if args.folder else None
    sample = folder is None and args.command == "run"
    if sample:
        from face_assets.core.samples import celebrity_sample

        folder = celebrity_sample(_settings().samples_dir)
        print(f"no folder given: the labelled 5-person sample from PyPI in {folder}")
        if not args.dry_run:
            print(f"on a demo database of its own in {_demo_dir()} (the configured one is not touched)")
    if folder is not None and not folder.is_dir():
        print(f"error: {folder} is not a folder", file=sys.stderr)
        return 2
    outcome = _run_steps(args, MODES["all"], folder, demo=sample)
    _print_persons(outcome)
    if sample and not args.dry_run:
        from face_assets.core.evaluation import labelled_media
        from face_assets.core.samples import SAMPLE_IDENTITY_DEPTH
        from face_assets.core.storage.store import FaceStore
        from face_assets.evaluate import score_store

        assert folder is not None
        store = FaceStore.from_url(outcome["url"])
        _print_evaluation(score_store(store, labelled_media(folder, SAMPLE_IDENTITY_DEPTH), "largest"))
        store.dispose()
        print(f"gallery: {_demo_dir() / 'gallery' / 'index.html'}")
    return 0


def cmd_mode(args: argparse.Namespace) -> int:
    """detect, recognize, recluster: one legacy mode, once."""
    _run_steps(args, MODES[args.command], None)
    return 0


def _repeat(args: argparse.Namespace, steps: Sequence[str], folder: Path | None) -> int:
    """Runs `steps` every `interval` seconds; `cycles` 0 means until interrupted."""
    cycle = 0
    try:
        while True:
            cycle += 1
            print(f"[cycle {cycle}] {time.strftime('%Y-%m-%d %H:%M:%S')}")
            _run_steps(args, steps, folder)
            if args.cycles and cycle >= args.cycles:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        print("stopped")
        return 0


def cmd_watch(args: argparse.Namespace) -> int:
    return _repeat(args, MODES["detect"], None)


def cmd_automate(args: argparse.Namespace) -> int:
    folder = Path(args.folder) if args.folder else None
    return _repeat(args, MODES["all"], folder)


def cmd_test(args: argparse.Namespace) -> int:
    from face_assets.core.thumbnail import save_jpeg
    from face_assets.core.vision.models import detector_for
    from face_assets.core.vision.transforms import MediaDecodeError, load_image, square_thumbnail

    image_path = Path(args.image)
    try:
        image = load_image(image_path)
    except MediaDecodeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    faces = detector_for(_settings()).detect(image)
    out = Path(args.out)
    print(f"{image_path}: {len(faces)} face(s), image {image.shape[1]}x{image.shape[0]}")
    for index, face in enumerate(faces, start=1):
        box = [round(v) for v in face.box_xyxy]
        line = f"  face {index}: box {box} score {face.score:.3f}"
        if not args.dry_run:
            target = out / f"{image_path.stem}_face{index}.jpg"
            save_jpeg(square_thumbnail(image, face.box_xyxy, _settings().thumbnail_px), target)
            line += f" thumbnail {target}"
        print(line)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from face_assets.evaluate import evaluate_folder

    report = evaluate_folder(Path(args.dir), pick=args.pick, identity_depth=args.identity_depth)
    if args.json:
        print(json.dumps(report))
    else:
        _print_evaluation(report)
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tqdm import tqdm

    from face_assets.core.tuning.finetune import finetune
    from face_assets.core.tuning.labels import labels_from_folder, labels_from_library
    from face_assets.core.tuning.model import TunedEmbedder
    from face_assets.core.tuning.triplet import TrainingParams
    from face_assets.core.vision.models import detector_for, embedder_for

    settings = _settings()
    embedder = embedder_for(settings)
    # A tuned model is tuned again from its base: the labels are the base model's embeddings.
    base = embedder.base if isinstance(embedder, TunedEmbedder) else embedder
    if args.dir:
        labels = labels_from_folder(Path(args.dir), detector_for(settings), base, args.identity_depth)
    else:
        store = _store()
        try:
            labels = labels_from_library(store, base.name)
        finally:
            store.dispose()
    params = TrainingParams(seed=args.seed)
    if args.max_epochs:
        params = replace(params, max_epochs=args.max_epochs)
    bar = tqdm(total=params.max_epochs, unit="epoch", file=sys.stderr, disable=not sys.stderr.isatty())
    rate = {"triplets": 0, "started": time.perf_counter()}

    def on_step(triplets: int, loss: float) -> None:
        rate["triplets"] += triplets

    def on_epoch(epoch: Any) -> None:
        per_second = rate["triplets"] / max(time.perf_counter() - rate["started"], 1e-9)
        shown = f"loss {epoch.loss:.4f}, held-out loss {epoch.validation:.4f}, {per_second:,.0f} triplets/s"
        bar.set_postfix_str(shown)
        bar.update(1)
        if bar.disable:  # not a terminal: a line per epoch instead of a bar
            print(f"finetune: epoch {epoch.number}/{params.max_epochs}, {shown}", file=sys.stderr)

    try:
        manifest = finetune(labels, base, settings.models_dir, params, on_epoch=on_epoch, on_step=on_step)
    finally:
        bar.close()
    print(
        f"{manifest.faces} faces of {manifest.identities} identities from {manifest.source}; "
        f"{manifest.epochs} epochs (kept {manifest.best_epoch}) in {manifest.seconds:.1f} s; held-out "
        f"identities' loss {manifest.validation_loss_before:.4f} -> {manifest.validation_loss_after:.4f}",
        file=sys.stderr,
    )
    print(manifest.name)  # alone on the last line: FACE_ASSETS_EMBEDDER=$(face-assets finetune DIR | tail -1)
    return 0


def _existing_database(url: str) -> str:
    """`url`, refused when it is a SQLite file that does not exist: a command that reads or
    corrects must not answer from an empty database made by a typo in the path."""
    from face_assets.core.errors import UserError
    from face_assets.core.storage.engine import sqlite_file

    file = sqlite_file(url)
    if file is not None and not file.exists():
        raise UserError(
            f"no database at {file}: check DATABASE_URL or FACE_ASSETS_DATA_DIR, or create it "
            "with `face-assets run FOLDER` or `face-assets db init`"
        )
    return url


def _store() -> Any:
    from face_assets.core.storage.store import FaceStore

    return FaceStore.from_url(_existing_database(_settings().resolved_database_url()))


def cmd_persons(args: argparse.Namespace) -> int:
    from face_assets.core import correction

    store = _store()
    action = args.persons_command
    if action == "list":
        # Appearances: photo faces, and each video track once (one scene, not each of its frames).
        print(f"{'id':>6}  {'faces':>5}  {'appearances':>11}  name")
        for person in correction.list_persons(store):
            mark = "" if person.user_named else "  (automatic name)"
            print(f"{person.id:>6}  {person.faces:>5}  {person.appearances:>11}  {person.name}{mark}")
    elif action == "show":
        faces = correction.person_faces(store, args.id)
        copies = store.copies_of_media_items(sorted({face.media_item_id for face in faces}))
        for face in faces:
            box = [round(v) for v in face.box_xyxy]
            print(f"face {face.id}: {face.path} box {box} thumbnail {face.thumbnail} ({face.assigned_by})")
            for copy in copies.pop(face.media_item_id, []):  # identical copies: one appearance
                print(f"  the same file at {copy}")
    elif action == "rename":
        name = correction.rename_person(store, args.id, args.name)
        print(f"person {args.id} is now {name!r}")
    elif action == "merge":
        target, sources = args.ids[0], args.ids[1:]
        moved = correction.merge_persons(store, target, sources)
        merged = f"person{'s' if len(sources) > 1 else ''} {', '.join(map(str, sources))}"
        print(f"{merged} merged into person {target}: {moved} faces moved")
    elif action == "split":
        split = correction.split_person(store, args.id, args.face_ids)
        verb = "are" if len(split.face_ids) > 1 else "is"
        print(f"{_faces_moved(split)} {verb} now person {split.person_id}")
    elif action == "forget":
        forgotten = correction.forget_person(store, args.id, _settings().resolved_thumbnail_dir())
        rejected = f", {forgotten.rejected} of them rejected from it earlier" if forgotten.rejected else ""
        print(
            f"person {args.id} forgotten: {len(forgotten.face_ids)} faces lost their embedding, "
            f"thumbnail and link{rejected}"
        )
    if action != "show" and action != "list":
        _refresh_gallery(store, redraw_map=action == "forget")
    return 0


def _faces_moved(moved: Any) -> str:
    """What a correction moved, named: "face 26", or "face 26 and the 5 other faces of its video
    track" when it moved a track's faces with it."""
    named = list(dict.fromkeys(moved.named))
    said = f"face {named[0]}" if len(named) == 1 else f"faces {', '.join(map(str, named))}"
    if not moved.others:
        return said
    others = "the other face" if moved.others == 1 else f"the {moved.others} other faces"
    tracks = "video track" if moved.tracks == 1 else "video tracks"
    return f"{said} and {others} of {'its' if len(named) == 1 else 'their'} {tracks}"


def _refresh_gallery(store: Any, redraw_map: bool = False) -> None:
    """Every correction shows in the gallery at once, not at the next clustering."""
    from face_assets.core.gallery import refresh_gallery

    settings = _settings()
    folders = settings.resolved_thumbnail_dir(), settings.resolved_gallery_dir()
    gallery = refresh_gallery(store, *folders, settings.map_method, redraw_map)
    if gallery is not None:
        logger.info("gallery rewritten: %s", gallery.page)


def cmd_faces(args: argparse.Namespace) -> int:
    from face_assets.core import correction

    store = _store()
    if args.faces_command == "move":
        moved = correction.move_face(store, args.face_id, args.person_id, force=args.force)
        several = len(moved.face_ids) > 1
        print(f"{_faces_moved(moved)} belong{'' if several else 's'} to person {args.person_id}")
    else:
        rejected = correction.reject_face(store, args.face_id)
        several = len(rejected.face_ids) > 1
        print(
            f"{_faces_moved(rejected)} {'are' if several else 'is'} rejected: "
            f"{'they stay' if several else 'it stays'} out of every person"
        )
    _refresh_gallery(store)
    return 0


def cmd_errors(args: argparse.Namespace) -> int:
    """Every media item whose detection failed, and its reason (`retry-errors` queues them); and
    every registered file a folder scan found gone, whose faces and persons are kept."""
    store = _store()
    errors = store.extraction_errors()
    for error in errors:
        print(f"media item {error['Id']}: {error['ExtractionError']}")
    missing = store.missing_files()
    for file in missing:
        holder = f"media item {file.media_item_id}" if file.media_item_id else "a copy"
        print(f"{holder}: missing since {file.since:%Y-%m-%d %H:%M} UTC: {file.path}")
    print(f"{len(errors)} media items with an error, {len(missing)} files missing")
    if missing:
        print(
            "missing files keep their faces and persons: put them back, or drop their faces with "
            "`face-assets faces reject` or `persons forget`"
        )
    return 0


def cmd_retry_errors(args: argparse.Namespace) -> int:
    count = _store().requeue_failed()
    print(f"{count} media items queued again: the next run detects them")
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    """Frees a lock by hand, for a holder that is gone but not seen as gone (another host)."""
    holder = _store().release_lock(args.name)
    print(f"{args.name} released ({holder.describe()})" if holder else f"{args.name} was not held")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from face_assets.core.export import ExportFolderError, export_persons

    if not args.dir:  # Path("") is the current folder: never exported into by accident
        raise ExportFolderError("export folder '': an empty name; give the folder to export into")
    folder = _settings().resolved_thumbnail_dir()
    change = export_persons(
        _store(), Path(args.dir), folder if args.thumbnails else None, montages_from=folder
    )
    for line in change.notes:  # each file kept, moved, renamed or not exported, named
        print(line, file=sys.stderr)
    print(
        f"{args.dir}: {change.added} added, {change.removed} removed, {change.unchanged} unchanged, "
        f"{change.kept} kept, {change.moved} moved, {change.renamed} renamed"
    )
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from face_assets.core.export import encode_images, write_encodings
    from face_assets.core.media_item import PHOTO_EXTENSIONS
    from face_assets.core.vision.models import detector_for, embedder_for
    from face_assets.core.vision.transforms import sniff_image_format

    paths: list[Path] = []
    for given in map(Path, args.images):
        if not given.is_dir():
            paths.append(given)  # named by the user: read, or named as unreadable
            continue
        found = sorted(p for p in given.rglob("*") if p.is_file() and not p.name.startswith("."))
        paths += [p for p in found if p.suffix.lower() in PHOTO_EXTENSIONS or sniff_image_format(p)]
    embedder = embedder_for(_settings())
    encoding = encode_images(paths, detector_for(_settings()), embedder)
    for line in encoding.unreadable:
        print(f"unreadable: {line}", file=sys.stderr)
    if not encoding.images_read:
        print(f"error: none of the {len(paths)} images given could be read; nothing written", file=sys.stderr)
        return 2
    write_encodings(encoding.records, Path(args.output), embedder.name)
    with_faces = len({r["image_path"] for r in encoding.records})
    print(
        f"{args.output}: {len(encoding.records)} faces from {with_faces} images; "
        f"{encoding.images_read} images read, {encoding.without_faces} without a face, "
        f"{len(encoding.unreadable)} unreadable"
    )
    return 0


# Ids are INT (IDENTITY) columns in every deployment (DESIGN.md section 2).
ID_MAX = 2**31 - 1


def _id(text: str) -> int:
    """A person or face Id given on the command line; anything else is argparse's usage error
    (exit 2), never a database error about a number too large for its driver."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an Id (a whole number)") from None
    if not 1 <= value <= ID_MAX:
        raise argparse.ArgumentTypeError(f"Id {text} out of range: Ids run from 1 to {ID_MAX}")
    return value


def _add_corrections(sub: Any) -> None:
    persons = sub.add_parser("persons", help="list, show and correct persons")
    persons.set_defaults(func=cmd_persons)
    actions = persons.add_subparsers(dest="persons_command", required=True)
    actions.add_parser("list", help="every person with its face count")
    actions.add_parser("show", help="the faces of a person").add_argument("id", type=_id)
    rename = actions.add_parser(
        "rename", help="give a person a name: one line, unique regardless of case, kept by every clustering"
    )
    rename.add_argument("id", type=_id)
    rename.add_argument("name")
    merge = actions.add_parser("merge", help="merge the other persons into the first (each Id once)")
    merge.add_argument("ids", type=_id, nargs="+")
    split = actions.add_parser(
        "split", help="move the given faces of a person, with the rest of their video tracks, to a new person"
    )
    split.add_argument("id", type=_id)
    split.add_argument("face_ids", type=_id, nargs="+")
    actions.add_parser(
        "forget", help="delete a person and erase every face ever linked to it (rejected ones included)"
    ).add_argument("id", type=_id)
    faces = sub.add_parser("faces", help="correct single faces")
    faces.set_defaults(func=cmd_faces)
    face_actions = faces.add_subparsers(dest="faces_command", required=True)
    move = face_actions.add_parser("move", help="put a face, with the rest of its video track, into a person")
    move.add_argument("face_id", type=_id)
    move.add_argument("person_id", type=_id)
    move.add_argument(
        "--force", action="store_true",
        help="even when the person has another face of the same photo (a mirror, a photo of a photo)",
    )  # fmt: skip
    reject = face_actions.add_parser(
        "reject", help="not a face, or a stranger: keep it, with the rest of its video track, out of persons"
    )
    reject.add_argument("face_id", type=_id)


def _common(defaults: bool) -> argparse.ArgumentParser:
    """-v and --dry-run, accepted before and after the command (`face-assets all --dry-run`, as
    the legacy service took them). After it they are SUPPRESSed when absent, so a subcommand
    never resets a flag given before it."""
    common = argparse.ArgumentParser(add_help=False)
    default = False if defaults else argparse.SUPPRESS
    common.add_argument("-v", "--verbose", action="store_true", default=default, help="log progress")
    common.add_argument(
        "--dry-run", action="store_true", default=default,
        help="run on a scratch copy: no row, thumbnail or Dagster record is written",
    )  # fmt: skip
    return common


class _Subcommands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Every subcommand, at any depth, takes the common flags too."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs["parents"] = [*kwargs.get("parents", ()), _common(defaults=False)]
        return super().add_parser(name, **kwargs)  # type: ignore[no-any-return]


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Subcommands)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="face-assets", description=__doc__, parents=[_common(True)])
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    init = db.add_parser("init", help="create or upgrade the tables (idempotent)")
    init.add_argument("--database-url")
    init.set_defaults(func=cmd_db_init)

    models = sub.add_parser("models", help="model files")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    fetch = models_sub.add_parser("fetch", help="fetch the model files into the cache")
    fetch.add_argument(
        "--all", action="store_true",
        help="also the files of embedders the settings do not name (dlib's ResNet for facenet+dlib)",
    )  # fmt: skip
    fetch.set_defaults(func=cmd_models_fetch)

    for name, text in (
        ("run", "register FOLDER and materialise every asset (no folder: the PyPI sample, scored)"),
        ("all", "the full pipeline once: register FOLDER if given, then every asset"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("folder", nargs="?")
        command.set_defaults(func=cmd_run)
    for name, text in (
        ("detect", "detect faces and write thumbnails for all unprocessed media items, once"),
        ("recognize", "embed the faces, match them to persons and cluster the rest, once"),
        ("recluster", "cluster all faces into persons, once"),
    ):
        mode = sub.add_parser(name, help=text)
        mode.set_defaults(func=cmd_mode)
        if name == "recluster":
            mode.add_argument(
                "--rebuild", action="store_true",
                help="rebuild every cluster from scratch (corrections and names are kept)",
            )  # fmt: skip
    for name, text, func in (
        ("watch", "detection continuously, every INTERVAL seconds", cmd_watch),
        ("automate", "the full pipeline every INTERVAL seconds", cmd_automate),
    ):
        command = sub.add_parser(name, help=text)
        # The sensor's interval by default: the CLI's loop and the UI's sensor pace alike.
        command.add_argument("--interval", type=float, default=float(DEFAULT_SENSOR_INTERVAL_S))
        command.add_argument("--cycles", type=int, default=0, help="stop after N cycles (0: never)")
        if name == "automate":
            command.add_argument("folder", nargs="?")
        command.set_defaults(func=func)

    test = sub.add_parser("test", help="detect faces in one image; no database writes")
    test.add_argument("image")
    test.add_argument("--out", default="face-test-thumbnails", help="folder for the thumbnails")
    test.set_defaults(func=cmd_test)

    _add_corrections(sub)

    sub.add_parser("errors", help="media items whose detection failed, with the reason").set_defaults(
        func=cmd_errors
    )
    sub.add_parser(
        "retry-errors", help="queue the failed media items again (the files were fixed or are back)"
    ).set_defaults(func=cmd_retry_errors)
    unlock = sub.add_parser("unlock", help="release a lock whose holder is gone (default: persons)")
    unlock.add_argument("name", nargs="?", default="person_clusters")
    unlock.set_defaults(func=cmd_unlock)

    export = sub.add_parser(
        "export",
        help="one folder per person with the photos it appears in; never removes or replaces a "
        "file it did not write, nor the last copy of a photo whose original is gone",
    )
    export.add_argument("dir")
    export.add_argument("--thumbnails", action="store_true", help="export face thumbnails instead")
    export.set_defaults(func=cmd_export)
    encode = sub.add_parser("encode", help="per-face records (path, box, embedding) in a pickle")
    encode.add_argument("images", nargs="+", help="image files or folders")
    encode.add_argument("-o", "--output", required=True)
    encode.set_defaults(func=cmd_encode)

    labels = (
        "score persons against DIR/<identity>/... labels: the top-level folder under DIR names the "
        "person of every photo or video below it, at any depth (Kofi/2003/summer/x.jpg is Kofi's); "
        "a photo or video directly in DIR is refused"
    )
    evaluate = sub.add_parser("evaluate", help=labels, description=labels)
    evaluate.add_argument("dir", help="the labelled folder: one folder per person")
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--pick", choices=("largest", "center"), default="largest")
    evaluate.add_argument(
        "--identity-depth", type=int, default=1, metavar="N",
        help="the identity folders are N levels under DIR: 2 for DIR/<split>/<identity>/...",
    )  # fmt: skip
    evaluate.set_defaults(func=cmd_evaluate)

    tune = (
        "fine-tune the embedder on labelled faces: DIR/<identity>/... as evaluate reads it, or with "
        "no DIR the library's named persons and corrections; prints the new model's name last"
    )
    finetune = sub.add_parser("finetune", help=tune, description=tune)
    finetune.add_argument("dir", nargs="?", help="the labelled folder (default: the library's labels)")
    finetune.add_argument("--identity-depth", type=int, default=1, metavar="N")
    finetune.add_argument("--seed", type=int, default=0, help="the same labels and seed give the same model")
    finetune.add_argument("--max-epochs", type=int, metavar="N", help="stop after N epochs at the most")
    finetune.set_defaults(func=cmd_finetune)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from face_assets.core.vision.lazy import quiet_tensorflow

    quiet_tensorflow()
    from face_assets.core import progress

    # A bar on a terminal; a plain line now and then when the output goes to a file or a log.
    shown = progress.Bar() if sys.stderr.isatty() else progress.Lines(lambda x: print(x, file=sys.stderr))
    try:
        with progress.reporting(shown):
            return int(args.func(args))
    except BrokenPipeError:
        return 0  # output piped into `head` and the like
    except Exception as error:
        known = _user_error(error)
        if known is None:
            raise
        if args.verbose:  # the whole story when asked for it; the one line last either way
            traceback.print_exception(error, file=sys.stderr)
        print(f"error: {known}", file=sys.stderr)
        return 2


def _user_error(error: BaseException) -> BaseException | None:
    """The error a user can act on (a UserError: missing model file, schema, unreachable
    database, a lock held, a bad correction...), unwrapped from Dagster's step errors; None for
    anything else, which keeps its traceback."""
    from face_assets.core.errors import UserError
    from face_assets.core.storage.store import unavailable

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, UserError):
            return seen
        down = unavailable(seen)  # a driver error saying the server is gone mid-command
        if down is not None:
            return down
        seen = seen.__cause__
    return None


if __name__ == "__main__":
    sys.exit(main())
