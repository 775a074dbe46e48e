"""Thumbnail files written before their rows: listed until saved, so none outlives a killed run.

Detection cuts a face's thumbnail as soon as the face is found (a video's frame by frame) and
saves the rows with the media item, in one transaction, afterwards. A run killed in between
leaves files that no row names. Each process lists the files it writes for items not saved yet,
each before it is written, in a journal of its own, `<thumbnail folder>/.unsaved/<host>-<pid>.txt`;
the next detection on the host removes the files of a journal whose process is gone, except
those a row names (another run saved the same item meanwhile: thumbnail names come from the
file, box and frame).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from face_assets.core.storage.locks import process_alive

logger = logging.getLogger(__name__)

FOLDER = ".unsaved"
# A journal of another host is only trusted to be abandoned after this long: its process cannot
# be asked, and one still at work on a long video must not lose its files.
OTHER_HOST_STALE_S = 24 * 3600.0

InUse = Callable[[Iterable[str]], set[str]]


class ThumbnailJournal:
    """The thumbnails this process wrote for media items whose rows are not saved yet."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / FOLDER / f"{socket.gethostname()}-{os.getpid()}.txt"
        self._unsaved: dict[int, list[str]] = {}
        self._lock = threading.Lock()  # the detector's thread and the thumbnail cutter's

    def wrote(self, media_item_id: int, relpath: str) -> None:
        """Called right before each file is written, so that a run killed in between leaves
        no file unlisted (an OSError is the folder's, as the file's would be)."""
        with self._lock:
            self._unsaved.setdefault(media_item_id, []).append(relpath)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(f"{relpath}\n")

    def settled(self, media_item_id: int) -> None:
        """The item's rows are saved (or its files removed): its files leave the journal."""
        with self._lock:
            if self._unsaved.pop(media_item_id, None) is None:
                return
            self._rewrite()

    def close(self, in_use: InUse) -> None:
        """The run is over: files still unsaved (it failed) are removed unless a row names them."""
        with self._lock:
            left = [relpath for files in self._unsaved.values() for relpath in files]
            self._unsaved.clear()
            removed = _remove_unnamed(self.folder, left, in_use)
            if removed:
                logger.info("removed %d thumbnail files of media items not saved", removed)
            with contextlib.suppress(OSError):  # the folder is not there or not writable
                self.path.unlink(missing_ok=True)

    def _rewrite(self) -> None:
        left = [relpath for files in self._unsaved.values() for relpath in files]
        partial = self.path.with_name(f".{self.path.name}.{threading.get_ident()}")
        try:
            if not left:
                self.path.unlink(missing_ok=True)
                return
            partial.write_text("".join(f"{relpath}\n" for relpath in left), encoding="utf-8")
            partial.replace(self.path)
        except OSError as error:
            # A full or read-only folder: the saved items' files stay listed, which is safe (a
            # sweep keeps every file a row names); the step goes on and reports the folder.
            logger.info("thumbnail journal %s not rewritten: %s", self.path, error)
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)


def _remove_unnamed(folder: Path, relpaths: list[str], in_use: InUse) -> int:
    named = in_use(relpaths) if relpaths else set()
    removed = 0
    for relpath in relpaths:
        if relpath in named:
            continue
        try:
            (folder / relpath).unlink(missing_ok=True)
            removed += 1
        except OSError as error:
            logger.warning("could not remove %s: %s", folder / relpath, error)
    return removed


def _abandoned(journal: Path) -> bool:
    host, _, pid = journal.stem.rpartition("-")
    if host == socket.gethostname() and pid.isdigit():
        return not process_alive(int(pid))
    try:
        return time.time() - journal.stat().st_mtime > OTHER_HOST_STALE_S
    except OSError:
        return False


def sweep_abandoned(folder: Path, in_use: InUse) -> int:
    """Removes the files listed by journals whose process is gone (a killed run), except those a
    row names; returns the files removed."""
    journals = folder / FOLDER
    if not journals.is_dir():
        return 0
    removed = 0
    for journal in sorted(journals.glob("*.txt")):
        if not _abandoned(journal):
            continue
        try:
            relpaths = [line for line in journal.read_text(encoding="utf-8").splitlines() if line]
        except OSError:
            continue
        removed += _remove_unnamed(folder, relpaths, in_use)
        journal.unlink(missing_ok=True)
    if removed:
        logger.info("removed %d thumbnail files a killed run left without rows", removed)
    return removed
