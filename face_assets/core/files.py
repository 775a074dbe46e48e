"""Files written whole or not at all: under a unique name beside the target, then renamed."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def partial_file(target: Path) -> Iterator[Path]:
    """A new empty file of a unique name beside `target` (its folder made if need be), removed
    unless the block renamed it: two writers of one target never share a partial file, and a
    failure (disk full, a crash of the writer) leaves none behind. Made with open's mode, not
    mkstemp's 0600, so the finished file has the permissions of any other file the user makes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    partial.open("xb").close()
    try:
        yield partial
    finally:
        partial.unlink(missing_ok=True)


def write_atomically(target: Path, data: bytes) -> None:
    with partial_file(target) as partial:
        partial.write_bytes(data)
        partial.replace(target)
