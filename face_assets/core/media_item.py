"""Registering media items: a folder of photos and videos becomes MediaFile + MediaItems rows."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from face_assets.core.errors import UserError
from face_assets.core.progress import track
from face_assets.core.storage.store import FaceStore, path_key, saving, unstorable_path
from face_assets.core.vision.media import VIDEO_EXTENSIONS, identify_media
from face_assets.core.vision.transforms import MediaDecodeError, read_error

logger = logging.getLogger(__name__)


class MediaFolderError(UserError, NotADirectoryError):
    """The media folder to register does not exist or is not a folder."""


@dataclass
class Registration:
    added: list[int] = field(default_factory=list)  # new media item ids
    already_known: int = 0
    # Files that look like photos or videos (or folders) and could not be registered, with the reason:
    # each is named to the user. A skipped file is not recorded, so the next scan tries it again.
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    not_media: int = 0  # other files (notes, sidecars): counted, not named


# Extensions of files people expect to be photos (and VIDEO_EXTENSIONS, videos): one that cannot
# be read is worth a warning, while a .txt or .xmp beside the photos is simply not media.
PHOTO_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .gif .bmp .tif .tiff .webp .heic .heif .avif .mpo .ppm .pgm .pbm"
    " .ico .jp2 .j2k .dng .cr2 .nef .arw".split()
)

MEDIA_EXTENSIONS = PHOTO_EXTENSIONS | VIDEO_EXTENSIONS

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


def _skip(result: Registration, path: Path, reason: str) -> None:
    logger.info("skipped %s: %s", path, reason)  # the run summary names it
    result.skipped.append((path, reason))


def library_files(folder: Path, result: Registration) -> Iterator[Path]:
    """Every visible file below `folder`, sorted, following symbolic links to folders once each;
    a folder that cannot be listed, a link loop and a dangling link are skipped and named."""
    seen: set[tuple[int, int]] = set()

    def listing_failed(error: OSError) -> None:
        _skip(result, Path(error.filename or folder), f"cannot list folder ({error.strerror or error})")

    for root, dirs, files in os.walk(folder, onerror=listing_failed, followlinks=True):
        here = Path(root)
        stat = here.stat()
        if (stat.st_dev, stat.st_ino) in seen:
            _skip(result, here, "folder already scanned (a symbolic link loop or a second link to it)")
            dirs.clear()
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs.sort()
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .git, .thumbnails: not media
        for name in sorted(files):
            if name.startswith("."):
                continue  # .DS_Store and other hidden files are not media
            path = here / name
            if path.is_symlink() and not path.exists():
                try:
                    path.stat()
                    reason = "cannot follow symbolic link"
                except OSError as error:
                    reason = str(read_error(path, error)).removeprefix(f"{path}: ")
                _skip(result, path, reason)
                continue
            yield path


def register_folder(store: FaceStore, folder: Path) -> Registration:
    """Registers every photo and video below `folder` once; formats are sniffed, extensions ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaFolderError(f"{folder}: not a folder")
    result = Registration()
    known = store.known_path_keys()
    chunk: list[tuple[Path, str, int]] = []
    with track("register", None, "files") as advance:
        for path in library_files(folder, result):
            advance(1)
            _consider(store, path, known, chunk, result)
    _register(store, chunk, result)
    logger.info(
        "registered %d new media items from %s (%d known, %d skipped, %d not media)",
        len(result.added), folder, result.already_known, len(result.skipped), result.not_media,
    )  # fmt: skip
    return result


def _consider(
    store: FaceStore, path: Path, known: set[str], chunk: list[tuple[Path, str, int]], result: Registration
) -> None:
    """One file of the walk: skipped when known or not media, else queued for registration."""
    if path_key(path) in known:
        result.already_known += 1
        return
    try:
        media_format = identify_media(path)
        size = path.stat().st_size
    except MediaDecodeError as error:
        if error.transient or path.suffix.lower() in MEDIA_EXTENSIONS:
            _skip(result, path, str(error).removeprefix(f"{path}: "))
        else:
            logger.info("not media: %s", path)
            result.not_media += 1
        return
    except OSError as error:  # gone between the listing and now
        _skip(result, path, str(read_error(path, error)).removeprefix(f"{path}: "))
        return
    too_long = unstorable_path(path)
    if too_long is not None:
        _skip(result, path, too_long)
        return
    chunk.append((path, media_format, size))
    if len(chunk) >= REGISTER_CHUNK:
        _register(store, chunk, result)
