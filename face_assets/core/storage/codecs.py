"""Values as the tables hold them: embeddings as bytes, file identities, id lists for IN (...)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePath

import numpy as np
from numpy.typing import NDArray

from face_assets.core.storage.schema import MediaFileTable

# Values per embedding: FaceNet's 512; FaceNet fused with dlib's ResNet (core/vision/fused.py:
# its setting and its model name, tuned or not, have FUSED_MARK) 512 + 128.
EMBEDDING_DIM = 512
FUSED_MARK = "+dlib"
FUSED_DIM = 640
# Ids per IN (...) list: SQL Server takes at most 2100 parameters in one statement.
IN_LIST_MAX = 500


def chunks(ids: Sequence[int], size: int = IN_LIST_MAX) -> Iterator[list[int]]:
    """Ids in slices short enough for one IN (...) list on every dialect."""
    ids = [int(i) for i in ids]
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def unstorable_path(path: Path) -> str | None:
    """Why MediaFile cannot hold this file's path (the servers refuse what does not fit the
    legacy column sizes; SQLite would store it silently), or None."""
    absolute = path.resolve()
    for value, column in (
        (str(absolute.parent), MediaFileTable.c.FilePath),
        (absolute.name, MediaFileTable.c.FileName),
    ):
        limit = column.type.length  # type: ignore[attr-defined]
        if len(value) > limit:
            return f"{column.name} would be {len(value)} characters, the table holds {limit}"
    return None


def path_key(path: Path) -> str:
    """The identity of a file: sha256 of its absolute, resolved path."""
    return hashlib.sha256(str(path.resolve()).encode("utf-8")).hexdigest()


def embedding_dim(model: str | None) -> int:
    """The values an embedding of `model` (a Faces.EmbeddingModel) has."""
    return FUSED_DIM if model is not None and FUSED_MARK in model else EMBEDDING_DIM


def encode_embedding(vector: NDArray[np.float32]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def decode_embedding(value: bytes | str | None) -> NDArray[np.float32] | None:
    """Raw float32 bytes (the product's format) or JSON text (written by legacy tools)."""
    if value is None:
        return None
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    # Raw float32 bytes may start with "[" by chance; JSON text is ASCII from "[" to "]".
    if raw[:1] == b"[" and raw.rstrip()[-1:] == b"]" and raw.isascii():
        return np.asarray(json.loads(raw.decode("ascii")), dtype=np.float32)
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def media_path(file_path: str, file_name: str, path_key: str | None = None) -> Path:
    """Rows this product wrote (they carry a PathKey) keep the folder in FilePath; legacy rows
    keep either the folder or the full path, and both are read."""
    if path_key is None and PurePath(file_path).name == file_name:
        return Path(file_path)
    return Path(file_path) / file_name
