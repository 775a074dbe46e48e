"""Registering media items: a folder of photos and videos becomes MediaFile + MediaItems rows."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from face_assets.core.digest import file_sha256
from face_assets.core.errors import UserError
from face_assets.core.progress import track
from face_assets.core.storage.media_files import FileFacts, KnownFile
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
    # Registered files whose content changed: their media items (pending again), each named.
    replaced: list[tuple[Path, int]] = field(default_factory=list)
    retired_faces: int = 0  # faces of the replaced content, deleted with their person links
    copies: list[tuple[Path, int]] = field(default_factory=list)  # identical copies: their media item
    missing: list[Path] = field(default_factory=list)  # registered files this scan found gone
    back: int = 0  # files missed before and present again


# Extensions of files people expect to be photos (and VIDEO_EXTENSIONS, videos): one that cannot
# be read is worth a warning, while a .txt or .xmp beside the photos is simply not media.
PHOTO_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .gif .bmp .tif .tiff .webp .heic .heif .avif .mpo .ppm .pgm .pbm"
    " .ico .jp2 .j2k .dng .cr2 .nef .arw".split()
)

MEDIA_EXTENSIONS = PHOTO_EXTENSIONS | VIDEO_EXTENSIONS

# Files registered per transaction: a commit per file cost more than sniffing the file.
REGISTER_CHUNK = 200


def _register(store: FaceStore, chunk: list[FileFacts], result: Registration) -> None:
    if not chunk:
        return
    with saving(f"registration of {chunk[0].path} and {len(chunk) - 1} more files"):
        registered = store.register_files(chunk, hash_of=_hash_or_none)
    for file, (kind, item) in zip(chunk, registered, strict=True):
        if kind == "new":
            result.added.append(int(item))  # type: ignore[arg-type]
        elif kind == "copy":
            logger.info("%s: an identical copy of media item %s", file.path, item)
            result.copies.append((file.path, int(item)))  # type: ignore[arg-type]
        else:
            result.already_known += 1
    chunk.clear()


def _hash_or_none(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


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


def register_folder(store: FaceStore, folder: Path, thumbnail_dir: Path | None = None) -> Registration:
    """Registers every photo and video below `folder` once; formats are sniffed, extensions
    ignored. A registered file whose content changed is processed again, an identical copy of a
    registered file shares its media item, and a registered file below `folder` that is gone is
    marked missing (its faces and persons stay until the user decides). The thumbnails of the
    faces a replaced file no longer has are removed from `thumbnail_dir`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaFolderError(f"{folder}: not a folder")
    result = Registration()
    root = folder.resolve()
    known = store.known_files(root)
    seen: set[str] = set()
    chunk: list[FileFacts] = []
    touched: list[tuple[int, FileFacts]] = []
    with track("register", None, "files") as advance:
        for path in library_files(folder, result):
            advance(1)
            key = path_key(path)
            seen.add(key)
            if key not in known and not path.resolve().is_relative_to(root):
                known |= store.known_files(keys=[key])  # reached through a link to elsewhere
            if key in known:
                _recheck(store, path, known[key], touched, result, thumbnail_dir)
            else:
                _consider(store, path, chunk, result)
    _register(store, chunk, result)
    store.note_files(touched)
    _miss(store, root, known, seen, result)
    logger.info(
        "registered %d new media items from %s (%d known, %d replaced, %d copies, %d missing, "
        "%d skipped, %d not media)",
        len(result.added), folder, result.already_known, len(result.replaced), len(result.copies),
        len(result.missing), len(result.skipped), result.not_media,
    )  # fmt: skip
    return result


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _recheck(
    store: FaceStore,
    path: Path,
    known: KnownFile,
    touched: list[tuple[int, FileFacts]],
    result: Registration,
    thumbnail_dir: Path | None,
) -> None:
    """A registered file seen again: unchanged (size and time as recorded: not opened), touched
    (same content), or replaced (new content: its media item is processed again)."""
    stat = _stat(path)
    if stat is None:
        result.already_known += 1  # gone between the listing and now: the next scan sees it
        return
    same_size = known.size is None or known.size == stat.st_size
    if same_size and known.modified_ns == stat.st_mtime_ns and not known.missing:
        result.already_known += 1
        return
    if same_size and known.modified_ns is None and known.content_hash is None:
        # Registered by a release that kept no time or hash: what it holds now is taken as
        # what was processed, rather than hashing and redoing a whole library after an upgrade.
        touched.append((known.id, FileFacts(path, "", stat.st_size, stat.st_mtime_ns)))
        result.already_known += 1
        result.back += known.missing
        return
    digest = _hash_or_none(path)
    if digest is None:
        result.already_known += 1  # unreadable now: the next scan looks again
        return
    facts = FileFacts(path, "", stat.st_size, stat.st_mtime_ns, digest)
    if same_size and digest == known.content_hash:
        touched.append((known.id, facts))
        result.already_known += 1
        result.back += known.missing
        return
    try:
        media_format = identify_media(path)
    except (MediaDecodeError, OSError) as error:
        reason = str(error).removeprefix(f"{path}: ")
        _skip(result, path, f"changed, and cannot be read now ({reason}); its faces are kept")
        return
    with saving(f"replaced file {path}"):
        retired = store.replace_media_file(known.id, replace(facts, media_format=media_format))
    if thumbnail_dir is not None:
        # Once the rows are gone: a crash in between leaves files without rows, never the reverse.
        for relative in retired.thumbnails:
            (thumbnail_dir / relative).unlink(missing_ok=True)
    for item in retired.media_item_ids:
        logger.info("%s changed: media item %d is processed again", path, item)
        result.replaced.append((path, item))
    result.retired_faces += retired.faces


def _miss(
    store: FaceStore, root: Path, known: dict[str, KnownFile], seen: set[str], result: Registration
) -> None:
    """Registered files below `root` (resolved) that the scan did not see and that are not there."""
    gone = []
    for key, file in known.items():
        if key in seen or file.missing or not file.path.is_relative_to(root):
            continue
        try:
            file.path.stat()
        except (FileNotFoundError, NotADirectoryError):
            gone.append(file)
        except OSError:
            continue  # cannot be looked at now (permissions, a share): not called missing
    if gone:
        store.mark_missing([f.id for f in gone])
        for file in gone:
            logger.info("missing: %s", file.path)
            result.missing.append(file.path)


def _consider(store: FaceStore, path: Path, chunk: list[FileFacts], result: Registration) -> None:
    """A file not registered yet: skipped when not media, else queued for registration."""
    try:
        media_format = identify_media(path)
        stat = path.stat()
        digest = file_sha256(path)
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
    chunk.append(FileFacts(path, media_format, stat.st_size, stat.st_mtime_ns, digest))
    if len(chunk) >= REGISTER_CHUNK:
        _register(store, chunk, result)
