"""Registering media items: a folder of photos becomes MediaFile + MediaItems rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from face_assets.core.storage.store import FaceStore, path_key, saving, unstorable_path
from face_assets.core.vision.transforms import sniff_image_format

logger = logging.getLogger(__name__)


@dataclass
class Registration:
    added: list[int] = field(default_factory=list)  # new media item ids
    already_known: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason)


# Files registered per transaction: a commit per file cost more than sniffing the file.
REGISTER_CHUNK = 200


def _register(store: FaceStore, chunk: list[tuple[Path, str, int]], result: Registration) -> None:
    if not chunk:
        return
    with saving(f"registration of {chunk[0][0]} and {len(chunk) - 1} more files"):
        ids = store.register_media_files(chunk)
    result.added.extend(item for item in ids if item is not None)
    result.already_known += sum(item is None for item in ids)
    chunk.clear()


def register_folder(store: FaceStore, folder: Path) -> Registration:
    """Registers every image below `folder` once; formats are sniffed, extensions ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    result = Registration()
    known = store.known_path_keys()
    chunk: list[tuple[Path, str, int]] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue  # hidden files and folders (.DS_Store, .git) are not media
        if path_key(path) in known:
            result.already_known += 1
            continue
        media_format = sniff_image_format(path)
        if media_format is None:
            logger.info("skipped %s: not an image", path)
            result.skipped.append((path, "not an image"))
            continue
        too_long = unstorable_path(path)
        if too_long is not None:
            logger.error("skipped %s: %s", path, too_long)
            result.skipped.append((path, too_long))
            continue
        chunk.append((path, media_format, path.stat().st_size))
        if len(chunk) >= REGISTER_CHUNK:
            _register(store, chunk, result)
    _register(store, chunk, result)
    logger.info(
        "registered %d new media items from %s (%d known, %d skipped)",
        len(result.added), folder, result.already_known, len(result.skipped),
    )  # fmt: skip
    return result
