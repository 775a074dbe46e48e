"""`face-assets evaluate`: the real pipeline on a temporary SQLite database, scored on labels."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg

from face_assets.core.evaluation import (
    Pick,
    labelled_media,
    pick_face,
    rare_fates,
    score_clusters,
    video_appearances,
)
from face_assets.core.storage.store import FaceStore
from face_assets.runs import materialize_pipeline

REPORT_KEYS = (
    "model", "pairwise_precision", "pairwise_recall", "pairwise_f", "bcubed_precision", "bcubed_recall",
    "bcubed_f", "nmi", "persons", "identities", "faces", "videos", "video_appearances", "misses",
    "unassigned_fraction", "rare_faces", "rare_unassigned", "rare_own", "rare_merged", "seconds",
)  # fmt: skip


def score_store(store: FaceStore, labelled: list[tuple[Path, str]], pick: Pick) -> dict[str, Any]:
    """A photo's label goes to one of its faces (`pick`); a video's label to each appearance
    of its person (the tracks of the faces `pick` chooses frame by frame), so that a scene
    counts once whatever its length; a file without a face is a miss."""
    items = store.media_items_by_path()
    faces = store.faces_of_media_items()
    sizes = store.media_item_sizes()
    videos = store.video_media_items()
    truth: list[str] = []
    predicted: list[int | None] = []
    detected_flags: list[bool] = []
    misses = unassigned = video_files = tracks = 0
    for path, identity in labelled:
        item = items.get(path.resolve())
        found = faces.get(item, []) if item is not None else []
        if item in videos:
            video_files += 1
            appearances = video_appearances(found, sizes.get(item), pick)  # type: ignore[arg-type]
            tracks += len(appearances)
        elif found:
            appearances = [found[pick_face(found, sizes.get(item), pick)]["person_id"]]  # type: ignore[arg-type]
        else:
            appearances = []
        if not appearances:
            misses += 1
            truth.append(identity)
            predicted.append(None)
            detected_flags.append(False)
            continue
        for person in appearances:
            truth.append(identity)
            predicted.append(person)
            detected_flags.append(True)
            unassigned += person is None
    scores = score_clusters(truth, predicted)
    # People with fewer than FREQUENT photos or appearances: each found face's fate (misses aside).
    found_faces = [(t, p) for t, p, hit in zip(truth, predicted, detected_flags, strict=True) if hit]
    fates = rare_fates([t for t, _ in found_faces], [p for _, p in found_faces], Counter(truth))
    persons = {p for p in predicted if p is not None}
    detected = len(found_faces)
    return {
        # The embedder that made the persons scored: base and tuned models compared by name.
        "model": ", ".join(store.embedding_models()) or "none",
        **scores.as_dict(),
        "persons": len(persons),
        "identities": len(set(truth)),
        "faces": sum(len(f) for f in faces.values()),
        "videos": video_files,
        "video_appearances": tracks,
        "misses": misses,
        "unassigned_fraction": unassigned / detected if detected else 0.0,
        **fates,
    }


def evaluate_folder(folder: Path, pick: Pick = "largest", identity_depth: int = 1) -> dict[str, Any]:
    """Scores the persons the pipeline makes of `folder` against its identity folders (the
    top-level folders under it, or those `identity_depth` levels down)."""
    started = time.perf_counter()
    labelled = labelled_media(folder, identity_depth)
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
            report = score_store(store, labelled, pick)
        finally:
            store.dispose()
    report["seconds"] = time.perf_counter() - started
    return {key: report[key] for key in REPORT_KEYS}
