"""A labelled folder (`<identity>/...`, as `face-assets evaluate` reads it) through the product's
own detection and embedding steps into a SQLite file kept for the next run, its faces' labels,
and the persons a first clustering makes of them: what the sweeps and the fine-tuning protocol
score."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.evaluation import labelled_images, pick_face
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


def load_labelled(folder: Path, cache: Path, pick: str, identity_depth: int = 1) -> dict[str, np.ndarray]:
    """Embeddings of every face, and the label of the picked face of each photo ('' for none)."""
    store = FaceStore.from_url(f"sqlite:///{cache}")
    try:
        data = store.face_embeddings()
        items = store.media_items_by_path()
        faces = store.faces_of_media_items()
        sizes = store.media_item_sizes()
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
    misses = 0
    images = labelled_images(folder, identity_depth)
    for path, identity in images:
        item = items.get(path.resolve())
        found = faces.get(item, []) if item is not None else []
        if not found:
            misses += 1
            continue
        face = found[pick_face(found, sizes.get(item), pick)]  # type: ignore[arg-type]
        if face["id"] in row_of:
            labels[row_of[face["id"]]] = identity
            paths[row_of[face["id"]]] = str(path)
    photos = Counter(identity for _, identity in images)
    return {
        "vectors": vectors,
        "media_item_ids": media_item_ids,
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
