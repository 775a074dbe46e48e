"""Progress of the long steps (registration, detection, embedding): items done of the total,
the rate and the time left, so that an hour of work is not an hour of silence.

The core reports through `track`; who shows it is chosen by the caller: log lines by default
(Dagster's step logs), a tqdm bar on a terminal or plain lines otherwise (the command line).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TextIO

logger = logging.getLogger(__name__)

# A line at most this often: enough to see a run move, few enough for a log.
LINE_EVERY_S = 30.0

Advance = Callable[[int], None]


class Reporter(Protocol):
    def track(self, step: str, total: int | None, unit: str) -> Any:
        """A context manager yielding `advance(n)`."""


def describe(step: str, done: int, total: int | None, unit: str, seconds: float) -> str:
    """E.g. "detect: 500/50000 media items, 12.1/s, about 1 h 08 min left"."""
    rate = done / seconds if seconds > 0 else 0.0
    counted = f"{done}/{total}" if total is not None else str(done)
    line = f"{step}: {counted} {unit}, {rate:.1f}/s"
    if total is not None and rate > 0 and done < total:
        left = int((total - done) / rate)
        hours, minutes, secs = left // 3600, left % 3600 // 60, left % 60
        remaining = f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
        line += f", about {remaining} left"
    return line


class Lines:
    """A line every LINE_EVERY_S through `emit` (a logger or a stream)."""

    def __init__(self, emit: Callable[[str], None], every_s: float = LINE_EVERY_S) -> None:
        self.emit, self.every_s = emit, every_s

    @contextmanager
    def track(self, step: str, total: int | None, unit: str) -> Iterator[Advance]:
        started = last = time.monotonic()
        done = 0

        def advance(n: int = 1) -> None:
            nonlocal done, last
            done += n
            now = time.monotonic()
            if now - last >= self.every_s:
                last = now
                self.emit(describe(step, done, total, unit, now - started))

        yield advance


class Bar:
    """A tqdm bar per step on a terminal, cleared when the step ends (the summary follows)."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream

    @contextmanager
    def track(self, step: str, total: int | None, unit: str) -> Iterator[Advance]:
        from tqdm import tqdm

        with tqdm(
            total=total, desc=step, unit=f" {unit}", file=self.stream, leave=False, dynamic_ncols=True
        ) as bar:
            yield bar.update


_reporter: Reporter = Lines(logger.info)


@contextmanager
def reporting(reporter: Reporter) -> Iterator[None]:
    """Shows the progress of the steps run inside the block with `reporter`."""
    global _reporter
    saved, _reporter = _reporter, reporter
    try:
        yield
    finally:
        _reporter = saved


@contextmanager
def track(step: str, total: int | None, unit: str) -> Iterator[Advance]:
    with _reporter.track(step, total, unit) as advance:
        yield advance
