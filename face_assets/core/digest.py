"""The sha256 of a file's bytes: a model file's check, a media file's content, an export's copy."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """Hex sha256 of the file's bytes, read in blocks (OSError when it cannot be read)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
