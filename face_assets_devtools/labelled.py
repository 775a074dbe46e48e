"""A labelled folder (`<identity>/...`, as `face-assets evaluate` reads it) through the product's
own detection and embedding steps into a SQLite file kept for the next run, its faces' labels,
and the persons a first clustering makes of them: what the sweeps and the fine-tuning protocol
score."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.evaluation import labelled_images, picked_faces
from face_assets.core.person import plan_persons
from face_assets.core.storage.store import FaceStore


def embed_folder(folder: Path, cache: Path) -> None:
    """Detection and embeddings of every photo of `folder` into the SQLite file `cache`."""
    import dagster as dg

    from face_assets.core.vision.lazy import quiet_tensorflow
    from face_assets.runs import materialize_pipeline

    quiet_tensorflow()
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        materialize_pipeline(
            folder,
            database_url=f"sqlite:///{cache}",
            thumbnail_dir=Path(tmp) / "thumbnails",
            instance=dg.DagsterInstance.ephemeral(),
            steps=("register", "detect", "embed"),
        )


def add_labelled_arguments(parser: argparse.ArgumentParser) -> None:
    """The labelled folder and how it is read: DIR, `--cache`, `--pick`, `--identity-depth`
    (`cached_labelled`'s arguments, as the sweeps take them)."""
    parser.add_argument("folder", type=Path)
    parser.add_argument("--cache", type=Path, help="SQLite file of the embeddings (default: a temporary one)")
    parser.add_argument("--pick", choices=("largest", "center"), default="center")
    parser.add_argument("--identity-depth", type=int, default=1, help="identity folders N levels under DIR")


def cached_labelled(
    folder: Path, cache: Path | None, pick: str, identity_depth: int = 1
) -> dict[str, np.ndarray]:
    """`load_labelled` from the SQLite file `cache`, made first (`embed_folder`) when it is not
    there; with no `cache`, a temporary one."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = (cache or Path(tmp) / "labelled.db").resolve()
        if not cache.exists():
            started = time.perf_counter()
            embed_folder(folder, cache)
            print(f"embedded {folder} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        return load_labelled(folder, cache, pick, identity_depth)


def load_labelled(folder: Path, cache: Path, pick: str, identity_depth: int = 1) -> dict[str, np.ndarray]:
    """Embeddings of every face, and the label of the picked face of each photo ('' for none)."""
    images = labelled_images(folder, identity_depth)
    store = FaceStore.from_url(f"sqlite:///{cache}")
    try:
        data = store.face_embeddings()
        items = store.media_items_by_path()
        picked = picked_faces(store, images, pick)  # type: ignore[arg-type]
    finally:
        store.dispose()
    # The cache may hold more than `folder` (the whole set, swept on a part): keep its photos.
    root = folder.resolve()
    inside = np.isin(data.media_item_ids, [i for p, i in items.items() if p.is_relative_to(root)])
    vectors, media_item_ids, face_ids = (
        data.vectors[inside],
        data.media_item_ids[inside],
        data.face_ids[inside],
    )
    row_of = {int(f): r for r, f in enumerate(face_ids)}
    labels = np.full(len(face_ids), "", dtype=object)
    paths = np.full(len(face_ids), "", dtype=object)  # the photo of each labelled face
    misses = sum(face is None for _, _, face in picked)
    for path, identity, face in picked:
        if face is not None and face["id"] in row_of:
            labels[row_of[face["id"]]] = identity
            paths[row_of[face["id"]]] = str(path)
    photos = Counter(identity for _, identity in images)
    return {
        "vectors": vectors,
        "media_item_ids": media_item_ids,
        "face_ids": face_ids,
        "labels": labels,
        "paths": paths,
        "photos_of_label": np.array([photos.get(label, 0) for label in labels]),
        "misses": np.array(misses),
        "images": np.array(len(images)),
    }


def persons_for(data: dict[str, np.ndarray], params: ClusterParams) -> np.ndarray:
    """Person label per face as a first clustering of an empty library gives it (-1: waiting)."""
    count = len(data["vectors"])
    _, groups, _ = plan_persons(
        data["media_item_ids"],
        np.full(count, -1, dtype=np.int64),
        np.zeros(count, dtype=bool),
        data["vectors"],
        params,
    )
    persons = np.full(count, -1, dtype=np.int64)
    for label, members in enumerate(groups):
        persons[members] = label
    return persons


def shrunk_photo(image: Image.Image, factor: float) -> Image.Image:
    """`image` shrunk `factor`-fold (a box filter, as a small face in a large photo is) and
    enlarged back to its size: its faces hold the detail of faces `factor` times smaller."""
    small = image.resize(
        (max(1, round(image.width / factor)), max(1, round(image.height / factor))), Image.BOX
    )
    return small.resize(image.size, Image.BILINEAR)
