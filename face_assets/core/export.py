"""Exports: one folder per person (originals or thumbnails), and per-face encodings in a pickle.

An export folder is kept in step with the persons: a second export adds and removes only what
changed, and never touches files it did not write (it keeps a manifest of its own files).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from face_assets.core.montage import montage_digest, montage_faces, write_montage
from face_assets.core.storage.store import FaceStore
from face_assets.core.vision.transforms import MediaDecodeError, embedding_crop, load_image
from face_assets.core.vision.types import FaceDetector, FaceEmbedder

logger = logging.getLogger(__name__)

MANIFEST = ".face-assets-export.json"


@dataclass(frozen=True)
class ExportChange:
    added: int
    removed: int
    kept: int


def _folder_name(name: str, person_id: int) -> str:
    """A file-system-safe folder name that stays unique: the person's name and Id."""
    safe = re.sub(r"[^\w .-]+", "_", name).strip(" .") or "Person"
    return f"{safe} ({person_id})"


def _wanted(store: FaceStore, thumbnail_dir: Path | None) -> dict[str, Path]:
    """Relative export path -> source file, for every person."""
    wanted: dict[str, Path] = {}
    faces = store.faces_by_person()
    for person in store.list_persons():
        folder = _folder_name(person.name, person.id)
        sources: dict[str, Path] = {}
        for face in faces.get(person.id, []):
            if thumbnail_dir is not None:
                if face.thumbnail:
                    sources[f"face-{face.id}{Path(face.thumbnail).suffix}"] = thumbnail_dir / face.thumbnail
            else:
                sources.setdefault(str(face.media_item_id), face.path)
        names = [p.name for p in sources.values()]
        for key, source in sources.items():
            name = source.name
            if thumbnail_dir is not None:
                name = key
            elif names.count(source.name) > 1:  # two originals of one name: the Id tells them apart
                name = f"{source.stem}-{key}{source.suffix}"
            wanted[f"{folder}/{name}"] = source
    return wanted


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # no second copy of the photo on disk
    except OSError:
        shutil.copy2(source, target)  # another file system, or links not allowed


BOX_FILE_HEADER = "frame,time_s,x1,y1,x2,y2,person_id,track_id\n"


def box_files(store: FaceStore) -> dict[str, str]:
    """Relative path -> text of each video's box file: a line per face, in frame order."""
    files: dict[str, str] = {}
    for item_id, (path, rows) in store.video_boxes().items():
        lines = [BOX_FILE_HEADER]
        for row in rows:
            x1, y1, x2, y2 = (float(v) for v in json.loads(row.BoundingBox)[:4])
            box = [f"{v:.1f}" for v in (x1, y1, x2, y2)]
            cells = [
                row.FrameNumber,
                f"{row.FrameTime or 0.0:.3f}",
                *box,
                row.PersonId or "",
                row.TrackId or "",
            ]
            lines.append(",".join(str(c) for c in cells) + "\n")
        stem = re.sub(r"[^\w .-]+", "_", path.stem).strip(" .") or "video"
        files[f"boxes/{stem}-{item_id}.csv"] = "".join(lines)
    return files


def _generated(text: str) -> str:
    """The manifest's record of a file the export wrote itself: its content's digest."""
    return "generated:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def _write_text(target: Path, *, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(target)


def montages(store: FaceStore, thumbnail_dir: Path) -> dict[str, tuple[str, Callable[[Path], None]]]:
    """Relative path -> (digest, writer) of each person's montage under `montages/`."""
    out: dict[str, tuple[str, Callable[[Path], None]]] = {}
    faces = store.faces_by_person()
    for person in store.list_persons():
        tiles = montage_faces(faces.get(person.id, []))
        if tiles:
            out[f"montages/{_folder_name(person.name, person.id)}.jpg"] = (
                "generated:" + montage_digest(tiles),
                functools.partial(write_montage, tiles, thumbnail_dir),
            )
    return out


def export_persons(
    store: FaceStore, out: Path, thumbnail_dir: Path | None = None, montages_from: Path | None = None
) -> ExportChange:
    """Brings `out` in step with the persons: originals (or, given `thumbnail_dir`, thumbnails),
    a box file per video under `boxes/`, and with `montages_from` (the thumbnail folder) a
    montage per person under `montages/`."""
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    previous: dict[str, str] = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    wanted = _wanted(store, thumbnail_dir)
    generated: dict[str, tuple[str, Callable[[Path], None]]] = {
        relative: (_generated(text), functools.partial(_write_text, text=text))
        for relative, text in box_files(store).items()
    }
    if montages_from is not None:
        generated |= montages(store, montages_from)
    records = {relative: str(source) for relative, source in wanted.items()}
    records |= {relative: digest for relative, (digest, _) in generated.items()}
    removed = 0
    for relative, old_source in previous.items():
        if records.get(relative) != old_source:
            (out / relative).unlink(missing_ok=True)
            removed += 1
    added = kept = 0
    written: dict[str, str] = {}
    for relative, record in sorted(records.items()):
        target = out / relative
        if previous.get(relative) == record and target.exists():
            kept += 1
        elif relative in generated:
            generated[relative][1](target)
            added += 1
        elif wanted[relative].is_file():
            target.unlink(missing_ok=True)
            _link_or_copy(wanted[relative], target)
            added += 1
        else:
            logger.warning("not exported: %s is missing", wanted[relative])
            continue
        written[relative] = record
    for folder in sorted({p.parent for p in (out / r for r in previous)}, reverse=True):
        if folder != out and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a person that is gone, or renamed
    partial = manifest_path.with_suffix(".tmp")
    partial.write_text(json.dumps(written, indent=0, sort_keys=True))
    partial.replace(manifest_path)
    return ExportChange(added, removed, kept)


@dataclass
class Encoding:
    records: list[dict[str, Any]] = field(default_factory=list)
    images_read: int = 0
    without_faces: int = 0
    unreadable: list[str] = field(default_factory=list)  # each file that could not be read, why


def encode_images(paths: Iterable[Path], detector: FaceDetector, embedder: FaceEmbedder) -> Encoding:
    """Per-face records like the legacy encoding script: image path, box, score, embedding."""
    encoding = Encoding()
    for path in paths:
        try:
            image = load_image(path)
        except MediaDecodeError as error:
            logger.info("%s", error)
            encoding.unreadable.append(str(error))
            continue
        encoding.images_read += 1
        faces = detector.detect(image)
        if not faces:
            encoding.without_faces += 1
            continue
        crops = np.stack([embedding_crop(image, f.box_xyxy, embedder.input_px) for f in faces])
        for face, vector in zip(faces, embedder.embed(crops), strict=True):
            encoding.records.append(
                {
                    "image_path": str(path),
                    "box": [float(v) for v in face.box_xyxy],
                    "score": float(face.score),
                    "embedding": np.asarray(vector, dtype=np.float32),
                }
            )
    return encoding


def write_encodings(records: list[dict[str, Any]], target: Path, model: str) -> None:
    """A plain pickle: {"model": str, "records": [dict, ...]}; numpy arrays only inside."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.tmp")
    with partial.open("wb") as handle:
        pickle.dump({"model": model, "records": records}, handle, protocol=pickle.HIGHEST_PROTOCOL)
    partial.replace(target)
