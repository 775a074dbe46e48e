"""Exports: one folder per person (originals or thumbnails), and per-face encodings in a pickle.

An export folder is kept in step with the persons: a second export adds and removes only what
changed, and never touches files it did not write (it keeps a manifest of its own files). It
removes or replaces a file of its own only while it is still what it wrote and another copy of
it remains: the last copy of a photo whose original is gone is kept (moved to its person's
current folder), and one the user changed is left to the user.
"""

from __future__ import annotations

import contextlib
import filecmp
import functools
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from face_assets.core.digest import file_sha256
from face_assets.core.errors import UserError
from face_assets.core.files import partial_file, write_atomically
from face_assets.core.montage import montage_digest, montage_faces, write_montage
from face_assets.core.storage.store import FaceStore
from face_assets.core.vision.transforms import MediaDecodeError, load_image
from face_assets.core.vision.types import FaceDetector, FaceEmbedder

logger = logging.getLogger(__name__)

MANIFEST = ".face-assets-export.json"
# Version 1 was a plain {path: record}; version 2 adds the path each file stands for, and the
# digest of a generated file's content (a montage's record describes its tiles, not its bytes).
MANIFEST_VERSION = 2
GENERATED = "generated:"


class ExportFolderError(UserError, OSError):
    """The export folder cannot take the export: a file in its place or on its path, a read-only
    file system, no permission, a full disk, or a manifest that cannot be read."""


@dataclass(frozen=True)
class ExportChange:
    added: int
    removed: int
    unchanged: int
    kept: int = 0  # the export's files it must not remove: original missing, or changed by the user
    moved: int = 0  # last copies of missing originals, moved to their person's current folder
    renamed: int = 0  # added or moved under another name: a file the export did not write was there
    notes: tuple[str, ...] = ()  # one line per file kept, moved, renamed or not exported


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
    """A hard link to `source` at `target`, else a copy; FileExistsError rather than replacing a
    file that is there."""
    try:
        os.link(source, target)  # no second copy of the photo on disk
        return
    except FileExistsError:
        raise
    except OSError:
        pass  # another file system, or links not allowed: a copy
    with partial_file(target) as partial:
        shutil.copy2(source, partial)
        if os.path.lexists(target):
            raise FileExistsError(17, "File exists", str(target))
        partial.replace(target)


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
    write_atomically(target, text.encode("utf-8"))


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


@dataclass(frozen=True)
class _Entry:
    """A manifest line: what the export wrote at one path."""

    record: str  # the original (or thumbnail) linked or copied there, or GENERATED + a digest
    slot: str  # the path it stands for: another than its own when a file not the export's was there
    sha256: str | None = None  # a generated file's bytes as written; None from a version 1 manifest

    @property
    def source(self) -> Path | None:
        return None if self.record.startswith(GENERATED) else Path(self.record)


def _read_manifest(path: Path) -> dict[str, _Entry]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") == MANIFEST_VERSION:
            return {
                relative: _Entry(entry["record"], entry.get("slot", relative), entry.get("sha256"))
                for relative, entry in data["files"].items()
            }
        return {relative: _Entry(str(record), relative) for relative, record in data.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        cause = error.strerror if isinstance(error, OSError) else error
        raise ExportFolderError(
            f"{path}: cannot be read as an export manifest ({cause}); it lists the files the export "
            "wrote, and without it every file there is taken for yours: restore it, or export into "
            "a new folder"
        ) from error


def _free_name(out: Path, slot: str) -> str:
    """`slot`, or the first of `name (2).ext`, `name (3).ext`, ... with nothing at it."""
    path = PurePosixPath(slot)
    candidate, number = slot, 1
    while os.path.lexists(out / candidate):
        number += 1
        candidate = str(path.with_name(f"{path.stem} ({number}){path.suffix}"))
    return candidate


class _Sync:
    """One export's changes to its folder. `tracked` is the manifest of what is on disk, true
    after every step, so that it can be saved when the export stops half way."""

    def __init__(self, out: Path, previous: dict[str, _Entry], written_before_ns: int) -> None:
        self.out = out
        self.previous = previous
        self.tracked = dict(previous)
        self.written_before_ns = written_before_ns
        self.counts: Counter[str] = Counter()
        self.notes: list[str] = []

    def run(
        self,
        records: dict[str, str],
        wanted: dict[str, Path],
        generated: dict[str, tuple[str, Callable[[Path], None]]],
    ) -> None:
        for relative in list(self.tracked):
            target = self.out / relative
            if target.is_symlink() or not target.is_file():  # removed, or replaced, by the user
                del self.tracked[relative]
        in_place: dict[str, str] = {}  # wanted path -> the export's file standing for it
        for relative, entry in sorted(self.tracked.items(), key=lambda item: item[0] != item[1].slot):
            if records.get(entry.slot) == entry.record:
                in_place.setdefault(entry.slot, relative)
        placed = set(in_place.values())
        last_copies: dict[str, list[str]] = {}  # a missing original -> the export's files of it
        for relative, entry in sorted(self.tracked.items()):
            if relative not in placed:
                self._retire(relative, entry, last_copies)
        for slot, record in sorted(records.items()):
            if slot in in_place:
                source = wanted.get(slot)
                if source is not None and not source.is_file():
                    self._keep(in_place[slot], record)
                else:
                    self.counts["unchanged"] += 1
            elif slot in generated:
                self._write(slot, record, generated[slot][1])
            elif wanted[slot].is_file():
                self._write(slot, record, functools.partial(_link_or_copy, wanted[slot]))
            elif last_copies.get(record):
                self._move(last_copies[record].pop(0), slot, record)
            else:
                self.notes.append(f"not exported: {wanted[slot]} is missing")
        for record, relatives in sorted(last_copies.items()):
            for relative in relatives:  # its media item is in no person now: left where it is
                self._keep(relative, record)
        for folder in sorted({(self.out / r).parent for r in self.previous}, reverse=True):
            if folder != self.out and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()  # a person that is gone, or renamed

    def _as_written(self, target: Path, entry: _Entry) -> bool:
        """Whether the file is still what the export wrote, with its source there to copy again."""
        source = entry.source
        if source is not None:
            # A copy is compared byte for byte: an edit may keep the size and time, and reading
            # it costs no more than the copy that replaces it.
            return os.path.samefile(target, source) or filecmp.cmp(target, source, shallow=False)
        content = file_sha256(target)
        if entry.sha256 is not None:
            return content == entry.sha256
        # A version 1 manifest recorded a box file's text digest but a montage's tiles: a file
        # not touched since that manifest was written is the one the export wrote.
        matches = entry.record == GENERATED + content[:20]
        return matches or target.stat().st_mtime_ns <= self.written_before_ns

    def _retire(self, relative: str, entry: _Entry, last_copies: dict[str, list[str]]) -> None:
        """A file of the previous export that no wanted path takes as it is."""
        target = self.out / relative
        source = entry.source
        if source is not None and not source.is_file():
            last_copies.setdefault(entry.record, []).append(relative)  # never removed
        elif self._as_written(target, entry):
            target.unlink()
            del self.tracked[relative]
            self.counts["removed"] += 1
        else:
            del self.tracked[relative]  # the user's file now: neither removed nor replaced
            self.counts["kept"] += 1
            why = f"it differs from its original {source}" if source else "changed since the export"
            self.notes.append(f"kept: {target}: {why}; left as yours")

    def _keep(self, relative: str, record: str) -> None:
        self.counts["kept"] += 1
        self.notes.append(f"kept: {self.out / relative}: its original {record} is missing")

    def _write(self, slot: str, record: str, writer: Callable[[Path], None]) -> None:
        while True:
            relative = _free_name(self.out, slot)
            target = self.out / relative
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                self.notes.append(f"not exported: {self.out / slot}: {target.parent} is a file")
                return
            try:
                writer(target)
            except FileExistsError:
                continue  # a file came there since the name was picked: the next name
            break
        sha256 = file_sha256(target) if record.startswith(GENERATED) else None
        self.tracked[relative] = _Entry(record, slot, sha256)
        self.counts["added"] += 1
        if relative != slot:
            self.counts["renamed"] += 1
            self.notes.append(f"renamed: {target}: a file the export did not write is at {self.out / slot}")

    def _move(self, relative: str, slot: str, record: str) -> None:
        """The last copy of a missing original, to the path its person now gives it."""
        new = _free_name(self.out, slot)
        target = self.out / new
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            self._keep(relative, record)
            return
        os.rename(self.out / relative, target)  # renamed, never copied then removed
        del self.tracked[relative]
        self.tracked[new] = _Entry(record, slot)
        self.counts["moved"] += 1
        moved = f"moved from {self.out / relative}"
        if new != slot:
            self.counts["renamed"] += 1
            moved += f"; a file the export did not write is at {self.out / slot}"
        self.notes.append(f"kept: {target}: its original {record} is missing ({moved})")

    def save(self) -> None:
        files = {
            relative: {"record": entry.record}
            | ({"slot": entry.slot} if entry.slot != relative else {})
            | ({"sha256": entry.sha256} if entry.sha256 else {})
            for relative, entry in self.tracked.items()
        }
        text = json.dumps({"version": MANIFEST_VERSION, "files": files}, indent=1, sort_keys=True)
        write_atomically(self.out / MANIFEST, text.encode("utf-8"))

    def change(self) -> ExportChange:
        counts = self.counts
        return ExportChange(
            counts["added"],
            counts["removed"],
            counts["unchanged"],
            counts["kept"],
            counts["moved"],
            counts["renamed"],
            tuple(self.notes),
        )


def open_export_folder(out: Path) -> None:
    """Creates `out` if need be and proves it takes files, before anything is exported."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with partial_file(out / MANIFEST):
            pass
    except OSError as error:
        blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
        if blocking == out:
            cause = "a file is there, not a folder"
        elif blocking is not None:
            cause = f"{blocking} is a file, not a folder"
        else:
            cause = error.strerror or str(error)
        raise ExportFolderError(f"export folder {out}: {cause}; nothing was exported") from error


def export_persons(
    store: FaceStore, out: Path, thumbnail_dir: Path | None = None, montages_from: Path | None = None
) -> ExportChange:
    """Brings `out` in step with the persons: originals (or, given `thumbnail_dir`, thumbnails),
    a box file per video under `boxes/`, and with `montages_from` (the thumbnail folder) a
    montage per person under `montages/`. Raises ExportFolderError when `out` cannot take it."""
    open_export_folder(out)
    wanted = _wanted(store, thumbnail_dir)
    generated: dict[str, tuple[str, Callable[[Path], None]]] = {
        relative: (_generated(text), functools.partial(_write_text, text=text))
        for relative, text in box_files(store).items()
    }
    if montages_from is not None:
        generated |= montages(store, montages_from)
    records = {relative: str(source) for relative, source in wanted.items()}
    records |= {relative: digest for relative, (digest, _) in generated.items()}
    manifest_path = out / MANIFEST
    previous = _read_manifest(manifest_path)
    sync = _Sync(out, previous, manifest_path.stat().st_mtime_ns if previous else 0)
    try:
        sync.run(records, wanted, generated)
    except BaseException as error:
        with contextlib.suppress(OSError):
            sync.save()  # what is on disk: nothing exported so far is later taken for the user's
        if isinstance(error, OSError) and not isinstance(error, UserError):
            raise _stopped(out, error) from error
        raise
    try:
        sync.save()
    except OSError as error:
        raise _stopped(out, error) from error
    return sync.change()


def _stopped(out: Path, error: OSError) -> ExportFolderError:
    return ExportFolderError(
        f"export to {out} stopped: {error.filename or out}: {error.strerror or error}; "
        "export again once that is fixed"
    )


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
        crops = np.stack([embedder.cut(image, f.box_xyxy, f.landmarks) for f in faces])
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
    with partial_file(target) as partial:
        with partial.open("wb") as handle:
            pickle.dump({"model": model, "records": records}, handle, protocol=pickle.HIGHEST_PROTOCOL)
        partial.replace(target)
