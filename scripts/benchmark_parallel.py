"""Batches in parallel on Celery workers, against PostgreSQL: photos per second with 1 and 2
workers, the runs, and the exactly-once check.

    python scripts/benchmark_parallel.py [--photos DIR] [--batches 8] [--workers 1,2] [--repeats 3]
                                         [--json PATH]

Each repeat is a whole deployment from nothing, as in the tests (face_assets_devtools/deployment.py):
a fresh application database on a throwaway PostgreSQL, Dagster's storage on another, a Redis
broker, the daemon with the sensor on, and N worker processes with working folders of their
own. The photos are registered as rows, the sensor makes the batches, the run queue launches at
most N at once. The rate is photos over the time from the first batch run's start to the last
one's end (model loading included, once per worker); the median of the repeats is printed.
Memory is each worker's peak resident size; the database load is the application database's
transactions and rows written per photo (pg_stat_database); storage is thumbnail bytes per photo.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path

import dagster as dg
from sqlalchemy import create_engine, make_url, text

from face_assets.core.media_item import register_folder
from face_assets.core.storage.store import FaceStore
from face_assets_devtools.deployment import Deployment, exactly_once, wait_for
from face_assets_devtools.harness import add_json_argument, sample_folder, throwaway_server, write_json
from face_assets_devtools.servers import RedisServer, ThrowawayServer

BATCH_JOB = "process_batch_job"


def peak_rss_mb(pid: int) -> float:
    """The peak resident size of a process and its children (a Celery worker runs its tasks
    in a child), the largest of them, in MB."""
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    peak = 0.0
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return peak


def database_writes(url: str) -> tuple[int, int]:
    """(transactions committed, rows inserted or updated) of the application database so far."""
    database = make_url(url).database
    engine = create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT xact_commit, tup_inserted + tup_updated FROM pg_stat_database WHERE datname = :d"),
            {"d": database},
        ).one()
    engine.dispose()
    return int(row[0]), int(row[1])


def one_deployment(
    root: Path, photos: Path, workers: int, batches: int, postgres: ThrowawayServer
) -> dict[str, object]:
    redis = RedisServer()
    app_url = postgres.new_database()
    store = FaceStore.from_url(app_url, upgrade=True)
    added = register_folder(store, photos).added
    batch_size = -(-len(added) // batches)
    deployment = Deployment(root, postgres, redis, app_url, max_runs=workers, batch_size=batch_size)
    try:
        names = [f"worker-{i + 1}" for i in range(workers)]
        processes = {name: deployment.start_worker(name) for name in names}
        deployment.start_daemon()
        writes_before = database_writes(app_url)
        deployment.start_sensor()
        instance = deployment.instance()

        def finished() -> list[dg.RunRecord] | None:
            records = list(instance.get_run_records(filters=dg.RunsFilter(job_name=BATCH_JOB)))
            ended = [r for r in records if r.dagster_run.is_finished]
            return records if records and len(ended) == len(records) >= batches else None

        records = wait_for(f"{batches} batch runs", finished, 3600, deployment)
        memory = [peak_rss_mb(processes[name].pid) for name in names]
        writes_after = database_writes(app_url)
        check = exactly_once(store, deployment.thumbnails)
        thumbnail_bytes = sum(p.stat().st_size for p in deployment.thumbnails.rglob("*") if p.is_file())
        instance.dispose()
    finally:
        deployment.close()
        redis.close()
    starts = [r.start_time for r in records if r.start_time]
    ends = [r.end_time for r in records if r.end_time]
    seconds = max(ends) - min(starts)
    statuses = sorted({r.dagster_run.status.value for r in records})
    partitions = [r.dagster_run.tags.get("dagster/partition") for r in records]
    store.dispose()
    return {
        "workers": workers,
        "photos": len(added),
        "batches": batches,
        "runs": len(records),
        "run_statuses": statuses,
        "partitions_run_twice": len(partitions) - len(set(partitions)),
        "seconds": round(seconds, 1),
        "photos_per_s": round(len(added) / seconds, 2),
        "run_seconds_median": round(statistics.median(r.end_time - r.start_time for r in records), 1),
        "worker_peak_rss_mb": [round(m) for m in memory],
        "db_transactions_per_photo": round((writes_after[0] - writes_before[0]) / len(added), 1),
        "db_rows_written_per_photo": round((writes_after[1] - writes_before[1]) / len(added), 1),
        "thumbnail_kb_per_photo": round(thumbnail_bytes / 1024 / len(added), 1),
        **check,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, help="a folder of photos (default: the PyPI 5-person sample)")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2")
    parser.add_argument("--repeats", type=int, default=3)
    add_json_argument(parser)
    args = parser.parse_args()
    # A benchmark stopped with SIGTERM still stops its servers, daemon and workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    photos = args.photos or sample_folder()
    results: dict[int, list[dict[str, object]]] = {}
    with throwaway_server("postgresql") as postgres:
        for workers in (int(w) for w in args.workers.split(",")):
            for repeat in range(args.repeats):
                root = Path(tempfile.mkdtemp(prefix=f"face-assets-parallel-{workers}-"))
                try:
                    result = one_deployment(root / "deployment", photos, workers, args.batches, postgres)
                finally:
                    shutil.rmtree(root, ignore_errors=True)
                results.setdefault(workers, []).append(result)
                print(f"workers={workers} repeat {repeat + 1}: {result}", flush=True)
                # Every repeat so far, rewritten after each: a long benchmark stopped keeps them.
                write_json(args.json, [r for repeats in results.values() for r in repeats])
    print()
    columns = [
        "workers", "photos", "batches / runs", "photos/s (median)", "run statuses", "seconds",
        "worker peak MB", "DB transactions / rows per photo", "thumbnail KB per photo", "exactly once",
    ]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for workers, repeats in results.items():
        rates = [float(r["photos_per_s"]) for r in repeats]  # type: ignore[arg-type]
        middle = sorted(repeats, key=lambda r: float(r["photos_per_s"]))[len(repeats) // 2]  # type: ignore[arg-type]
        clean = all(
            r["runs"] == r["batches"] and r["run_statuses"] == ["SUCCESS"] and r["partitions_run_twice"] == 0
            and not any(r[k] for k in ("pending", "items_with_faces_not_once", "faces_twice",
                                       "thumbnails_missing", "thumbnails_stray"))
            for r in repeats
        )  # fmt: skip
        print(
            f"| {workers} | {middle['photos']} | {middle['batches']} / {middle['runs']} | "
            f"{statistics.median(rates):.2f} ({', '.join(f'{r:.2f}' for r in rates)}) | "
            f"{middle['run_statuses']} | {middle['seconds']} | {middle['worker_peak_rss_mb']} | "
            f"{middle['db_transactions_per_photo']} / {middle['db_rows_written_per_photo']} | "
            f"{middle['thumbnail_kb_per_photo']} | {'yes' if clean else 'NO'} |"
        )


if __name__ == "__main__":
    main()
