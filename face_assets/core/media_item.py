"""Registering media items: a folder of photos and videos becomes MediaFile + MediaItems rows."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from face_assets.core.digest import file_sha256
from face_assets.core.errors import UserError
from face_assets.core.progress import track
from face_assets.core.storage.media_files import FileFacts, KnownFile
from face_assets.core.storage.store import IN_LIST_MAX, FaceStore, path_key, saving, unstorable_path
from face_assets.core.vision.formats import AVIF_EXTENSIONS, HEIF_EXTENSIONS, RAW_EXTENSIONS
from face_assets.core.vision.media import VIDEO_EXTENSIONS, identify_media
from face_assets.core.vision.transforms import MediaDecodeError, read_error
from face_assets.core.vision.video import probe_video

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
    # Faces of replaced content, and of Live Photo movies registered alone before, deleted with
    # their person links.
    retired_faces: int = 0
    copies: list[tuple[Path, int]] = field(default_factory=list)  # identical copies: their media item
    missing: list[Path] = field(default_factory=list)  # registered files this scan found gone
    back: int = 0  # files missed before and present again
    # Movies of Live Photos linked to their photo: (movie, the photo's media item); no media item
    # of their own, so that moment's faces count once.
    live_photo_movies: list[tuple[Path, int | None]] = field(default_factory=list)


# Extensions of files people expect to be photos (and VIDEO_EXTENSIONS, videos): one that cannot
# be read is worth a warning, while a .txt or .xmp beside the photos is simply not media.
_PILLOW_EXTENSIONS = (
    ".jpg .jpeg .jpe .jfif .png .gif .bmp .tif .tiff .webp .mpo .ppm .pgm .pbm .ico .jp2 .j2k"
)
PHOTO_EXTENSIONS = frozenset(_PILLOW_EXTENSIONS.split()) | HEIF_EXTENSIONS | AVIF_EXTENSIONS | RAW_EXTENSIONS

MEDIA_EXTENSIONS = PHOTO_EXTENSIONS | VIDEO_EXTENSIONS

# Files registered per transaction: a commit per file cost more than sniffing the file.
REGISTER_CHUNK = 200

# A Live Photo's movie runs about 3 s (1.5 s before the shutter, 1.5 s after); a longer video
# named like a photo beside it is a video of its own.
LIVE_PHOTO_MAX_S = 4.0


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
        elif kind == "live":
            logger.info("%s: the movie of a Live Photo, media item %s", file.path, item)
            result.live_photo_movies.append((file.path, item))
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
    registered file shares its media item, the movie of a Live Photo is linked to its photo's,
    and a registered file below `folder` that is gone is marked missing (its faces and persons
    stay until the user decides). The thumbnails of the faces a replaced file (or a Live Photo
    movie registered alone before) no longer has are removed from `thumbnail_dir`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaFolderError(f"{folder}: not a folder")
    result = Registration()
    root = folder.resolve()
    known = store.known_files(root)
    seen: set[str] = set()
    chunk: list[FileFacts] = []
    touched: list[tuple[int, FileFacts]] = []
    beside, lengths = _PhotosBeside(), _Lengths()
    # Movies with a photo of the same name: told apart once the photos of this scan are in.
    new_movies: list[tuple[FileFacts, Path]] = []
    known_movies: list[tuple[KnownFile, Path]] = []
    with track("register", None, "files") as advance:
        for path in library_files(folder, result):
            advance(1)
            key = path_key(path)
            seen.add(key)
            if key not in known and not path.resolve().is_relative_to(root):
                known |= store.known_files(keys=[key])  # reached through a link to elsewhere
            photo = beside.photo_of(path)
            if key in known:
                _recheck(store, path, known[key], touched, result, thumbnail_dir)
                if photo is not None and known[key].live_photo_of is None:
                    known_movies.append((known[key], photo))
                continue
            facts = _consider(path, result, lengths.identify if photo is not None else identify_media)
            if facts is not None and photo is not None:
                new_movies.append((facts, photo))
            elif facts is not None:
                chunk.append(facts)
                if len(chunk) >= REGISTER_CHUNK:
                    _register(store, chunk, result)
    _register(store, chunk, result)
    _pair_live_photos(store, new_movies, known_movies, lengths, result, thumbnail_dir)
    store.note_files(touched)
    _miss(store, root, known, seen, result)
    logger.info(
        "registered %d new media items from %s (%d known, %d replaced, %d copies, %d live photo "
        "movies, %d missing, %d skipped, %d not media)",
        len(result.added), folder, result.already_known, len(result.replaced), len(result.copies),
        len(result.live_photo_movies), len(result.missing), len(result.skipped), result.not_media,
    )  # fmt: skip
    return result


class _PhotosBeside:
    """The photo named like a movie in its folder (IMG_1234.HEIC beside IMG_1234.MOV, the name
    compared case-insensitively): the two halves of a Live Photo. The walk goes folder by
    folder, so one folder's photos are kept at a time, listed when a movie is first seen."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.photos: dict[str, Path] = {}

    def photo_of(self, path: Path) -> Path | None:
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            return None
        if path.parent != self.folder:
            self.folder, self.photos = path.parent, {}
            try:
                names = sorted(os.listdir(path.parent))
            except OSError:
                names = []
            for name in names:
                if not name.startswith(".") and Path(name).suffix.lower() in PHOTO_EXTENSIONS:
                    self.photos.setdefault(Path(name).stem.casefold(), path.parent / name)
        return self.photos.get(path.stem.casefold())


class _Lengths(dict[Path, float]):
    """Lengths of the movies this scan probed, so that a new movie is opened by FFmpeg once."""

    def identify(self, path: Path) -> str:
        """identify_media for a movie, keeping its length."""
        try:
            info = probe_video(path)
        except MediaDecodeError:
            return identify_media(path)  # a photo under a movie's name, or the reason it is neither
        self[path] = info.duration_s
        return info.media_format

    def short(self, path: Path) -> bool:
        """Whether `path` is a video of at most LIVE_PHOTO_MAX_S seconds."""
        if path not in self:
            try:
                self[path] = probe_video(path).duration_s
            except (MediaDecodeError, OSError):
                return False
        return 0 < self[path] <= LIVE_PHOTO_MAX_S


def _pair_live_photos(
    store: FaceStore,
    new_movies: list[tuple[FileFacts, Path]],
    known_movies: list[tuple[KnownFile, Path]],
    lengths: _Lengths,
    result: Registration,
    thumbnail_dir: Path | None,
) -> None:
    """Movies named like a photo beside them, once this scan's photos are registered: a short
    one whose photo is registered is linked to it, without a media item of its own (a movie
    registered alone in an earlier scan gives its media item up); the others are videos.
    The photo may come before or after its movie, in one scan or two."""
    if not new_movies and not known_movies:
        return
    keys = sorted({path_key(photo) for _, photo in [*new_movies, *known_movies]})
    photos: dict[str, KnownFile] = {}
    for start in range(0, len(keys), IN_LIST_MAX):
        photos |= store.known_files(keys=keys[start : start + IN_LIST_MAX])
    linked, alone = [], []
    for facts, photo in new_movies:
        held = photos.get(path_key(photo))
        if held is not None and lengths.short(facts.path):
            linked.append(replace(facts, live_photo_of=held.id))
        else:
            alone.append(facts)
    for files in (linked, alone):
        for start in range(0, len(files), REGISTER_CHUNK):
            _register(store, files[start : start + REGISTER_CHUNK], result)
    for movie, photo in known_movies:
        held = photos.get(path_key(photo))
        if held is None or not lengths.short(movie.path):
            continue
        with saving(f"Live Photo movie {movie.path}"):
            linked_to = store.link_live_photo(movie.id, held.id)
        if linked_to is None:
            logger.info("%s: a Live Photo's movie whose faces a user placed: kept as its own", movie.path)
            continue
        retired, item = linked_to
        if thumbnail_dir is not None:
            for relative in retired.thumbnails:
                (thumbnail_dir / relative).unlink(missing_ok=True)
        logger.info("%s: the movie of a Live Photo, media item %s; its own retired", movie.path, item)
        result.live_photo_movies.append((movie.path, item))
        result.retired_faces += retired.faces


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


def _consider(
    path: Path, result: Registration, identify: Callable[[Path], str] = identify_media
) -> FileFacts | None:
    """A file not registered yet: None when it is skipped or not media, else what to register."""
    try:
        media_format = identify(path)
        stat = path.stat()
        digest = file_sha256(path)
    except MediaDecodeError as error:
        if error.transient or path.suffix.lower() in MEDIA_EXTENSIONS:
            _skip(result, path, str(error).removeprefix(f"{path}: "))
        else:
            logger.info("not media: %s", path)
            result.not_media += 1
        return None
    except OSError as error:  # gone between the listing and now
        _skip(result, path, str(read_error(path, error)).removeprefix(f"{path}: "))
        return None
    too_long = unstorable_path(path)
    if too_long is not None:
        _skip(result, path, too_long)
        return None
    return FileFacts(path, media_format, stat.st_size, stat.st_mtime_ns, digest)
