"""Rows written per second by the product's storage code, on each database backend.

    python scripts/benchmark_db.py [--items 1000] [--faces-per-item 3] [--repeats 3] [--json PATH]
    python scripts/benchmark_db.py --url 'mssql+pyodbc://...'   # your own server, a scratch database

Without --url it measures the embedded SQLite file and throwaway PostgreSQL (psycopg) and
MariaDB (pyodbc) servers started on 127.0.0.1, as the tests do. Each repeat writes into an empty
database, through FaceStore, what the pipeline writes, in the same transactions:
- register: a MediaFile and a MediaItems row per media item, one transaction per item;
- detect: each item's claim and its face rows, one transaction per item;
- thumbnails: one batched UPDATE per media item, as the thumbnail step writes them;
- embeddings: one batched UPDATE per 64 faces or more (whole media items), as the embedding
  step writes them;
- persons: persons created and every face assigned, one transaction.
Statements are counted as the driver receives them: a batch is one statement, whatever its size.
Reports medians over repeats (the machine is noisy); no model is loaded.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy import event

from face_assets.core.storage.store import FaceStore
from face_assets.core.thumbnail import faces_by_media_item
from face_assets.core.vision.types import DetectedFace
from face_assets_devtools.harness import (
    BACKENDS,
    ThrowawayDatabases,
    add_json_argument,
    median_of,
    write_json,
)

EMBED_BATCH = 64  # faces per embedding write, as the embedding step's default
PERSON_SIZE = 20  # faces per person


def _faces(count: int) -> list[DetectedFace]:
    return [
        DetectedFace((10.0 + 60 * k, 20.0, 50.0 + 60 * k, 80.0), 0.99, ((20.0 + 60 * k, 40.0),) * 5)
        for k in range(count)
    ]


def run_once(url: str, items: int, faces_per_item: int, folder: Path) -> dict[str, dict[str, float]]:
    store = FaceStore.from_url(url, upgrade=True)
    statements = [0]

    def count(*_: object) -> None:
        statements[0] += 1

    event.listen(store.engine, "before_cursor_execute", count)
    results: dict[str, dict[str, float]] = {}

    def phase(name: str, rows: int, work: Callable[[], object]) -> None:
        statements[0] = 0
        started = time.perf_counter()
        work()
        seconds = time.perf_counter() - started
        results[name] = {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds,
                         "statements": statements[0]}  # fmt: skip

    ids: list[int] = []

    def register() -> None:
        for n in range(items):
            item = store.register_media_file(folder / f"{n:06d}.jpg", "JPEG", 1000)
            if item:
                ids.append(item)

    phase("register", 2 * items, register)
    faces = _faces(faces_per_item)
    phase("detect", items * (1 + faces_per_item),
          lambda: [store.save_detection(i, faces, "retinaface", (640, 480)) for i in ids])  # fmt: skip
    records = store.faces_without_embedding()
    face_ids = [r.id for r in records]
    index_of = {f: k for k, f in enumerate(face_ids)}
    per_item = [[f.id for f in group] for _, group in faces_by_media_item(records)]
    # The embedding step writes whole media items once it holds EMBED_BATCH faces or more.
    embed_batches: list[list[int]] = [[]]
    for item_faces in per_item:
        if len(embed_batches[-1]) >= EMBED_BATCH:
            embed_batches.append([])
        embed_batches[-1] += item_faces
    phase("thumbnails", len(face_ids), lambda: [
        store.save_thumbnails([(f, f"{f}.jpg", f"{f % 100:02d}/{f}.jpg") for f in b], [100.0] * len(b))
        for b in per_item
    ])  # fmt: skip
    vectors = np.random.default_rng(0).normal(size=(len(face_ids), 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    phase("embeddings", len(face_ids), lambda: [
        store.save_embeddings(b, vectors[[index_of[f] for f in b]], "facenet") for b in embed_batches
    ])  # fmt: skip
    groups = [face_ids[k : k + PERSON_SIZE] for k in range(0, len(face_ids), PERSON_SIZE)]
    phase("persons", len(face_ids) + len(groups), lambda: store.apply_person_changes(groups, [], []))
    started = time.perf_counter()
    loaded = store.face_embeddings()
    results["read_embeddings"] = {"rows": len(loaded.face_ids), "seconds": time.perf_counter() - started,
                                  "rows_per_s": len(loaded.face_ids) / (time.perf_counter() - started),
                                  "statements": 1}  # fmt: skip
    assert len(loaded.face_ids) == len(face_ids)
    store.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--faces-per-item", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--url", help="a scratch database of your own instead of the throwaway ones")
    add_json_argument(parser)
    args = parser.parse_args()

    report: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if args.url:
            runs = [run_once(args.url, args.items, args.faces_per_item, folder / str(k)) for k in range(1)]
            report["url"] = median_of(runs)
        for backend in [] if args.url else args.backends.split(","):
            with ThrowawayDatabases(backend) as databases:
                runs = []
                for k in range(args.repeats):
                    url = databases.new(folder / f"{k}.db")
                    runs.append(run_once(url, args.items, args.faces_per_item, folder / str(k)))
                report[backend] = median_of(runs)

    write_json(args.json, report)
    print(f"{args.items} media items x {args.faces_per_item} faces, median of {args.repeats}")
    print(f"{'backend':<11}{'phase':<17}{'rows/s':>10}{'rows':>8}{'statements':>12}")
    for backend, phases in report.items():
        for name, m in phases.items():
            print(f"{backend:<11}{name:<17}{m['rows_per_s']:>10.0f}{m['rows']:>8.0f}{m['statements']:>12.0f}")


if __name__ == "__main__":
    main()
