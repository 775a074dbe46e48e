"""Small helpers that turn run summaries into materialisation metadata."""

import time
from collections.abc import Sequence
from typing import Any

import dagster as dg

from face_assets.core.vision.types import FaceDetector, FaceEmbedder

PREVIEW_ROWS = 20
# Problems named one by one in a run's metadata (the command line prints them from there).
LISTED_ROWS = 1000


def error_preview(errors: Sequence[str]) -> dg.MetadataValue:
    """The first errors as a markdown list, so a bad file is visible in the UI."""
    if not errors:
        return dg.MetadataValue.md("no errors")
    lines = [f"- {e}" for e in errors[:PREVIEW_ROWS]]
    if len(errors) > PREVIEW_ROWS:
        lines.append(f"- ... and {len(errors) - PREVIEW_ROWS} more")
    return dg.MetadataValue.md("\n".join(lines))


def table_preview(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("(none)")
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "\n".join("| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows[:PREVIEW_ROWS])
    return dg.MetadataValue.md(head + body)


def listed(lines: Sequence[str]) -> dg.MetadataValue:
    """Every problem of a run by name (the first LISTED_ROWS), for the command line and the UI."""
    return dg.MetadataValue.json({"count": len(lines), "lines": list(lines[:LISTED_ROWS])})


def load_model(model: FaceDetector | FaceEmbedder) -> dict[str, float | bool]:
    """Loads the model if this process has not; the metadata saying which: a worker process
    loads each model once and reuses it for every later step and run."""
    reused = bool(getattr(model, "loaded", False))
    started = time.perf_counter()
    model.load()
    return {"model_load_seconds": round(time.perf_counter() - started, 2), "model_reused": reused}
