"""`face-assets evaluate`: the real pipeline on a temporary SQLite database, scored on labels."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg

from face_assets.core.evaluation import Pick, labelled_images, pick_face, rare_fates, score_clusters
from face_assets.core.storage.store import FaceStore
from face_assets.runs import materialize_pipeline

REPORT_KEYS = (
    "pairwise_precision", "pairwise_recall", "pairwise_f", "bcubed_precision", "bcubed_recall",
    "bcubed_f", "nmi", "persons", "identities", "faces", "misses", "unassigned_fraction",
    "rare_faces", "rare_unassigned", "rare_own", "rare_merged", "seconds",
)  # fmt: skip


def score_store(store: FaceStore, images: list[tuple[Path, str]], pick: Pick) -> dict[str, Any]:
    """Each image's label goes to one of its faces; an image without a face is a miss."""
    items = store.media_items_by_path()
    faces = store.faces_of_media_items()
    sizes = store.media_item_sizes()
    truth: list[str] = []
    predicted: list[int | None] = []
    detected_flags: list[bool] = []
    misses = unassigned = 0
    for path, identity in images:
        item = items.get(path.resolve())
        found = faces.get(item, []) if item is not None else []
        truth.append(identity)
        detected_flags.append(bool(found))
        if not found:
            misses += 1
            predicted.append(None)
            continue
        person = found[pick_face(found, sizes.get(item), pick)]["person_id"]  # type: ignore[arg-type]
        unassigned += person is None
        predicted.append(person)
    scores = score_clusters(truth, predicted)
    # People with fewer than FREQUENT photos: each found face's fate (missed photos aside).
    found_faces = [(t, p) for t, p, hit in zip(truth, predicted, detected_flags, strict=True) if hit]
    fates = rare_fates([t for t, _ in found_faces], [p for _, p in found_faces], Counter(truth))
    persons = {p for p in predicted if p is not None}
    detected = len(truth) - misses
    return {
        **scores.as_dict(),
        "persons": len(persons),
        "identities": len(set(truth)),
        "faces": sum(len(f) for f in faces.values()),
        "misses": misses,
        "unassigned_fraction": unassigned / detected if detected else 0.0,
        **fates,
    }


def evaluate_folder(folder: Path, pick: Pick = "largest") -> dict[str, Any]:
    started = time.perf_counter()
    images = labelled_images(folder)
    with tempfile.TemporaryDirectory(prefix="face-assets-evaluate-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'evaluate.db'}"
        # An ephemeral instance: scoring runs stay out of the user's asset history.
        materialize_pipeline(
            folder,
            database_url=url,
            thumbnail_dir=Path(tmp) / "thumbnails",
            instance=dg.DagsterInstance.ephemeral(),
        )
        store = FaceStore.from_url(url)
        try:
            report = score_store(store, images, pick)
        finally:
            store.dispose()
    report["seconds"] = time.perf_counter() - started
    return {key: report[key] for key in REPORT_KEYS}
