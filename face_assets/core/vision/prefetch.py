"""Decoding ahead: the next images are read in a background thread while the models run.

Pillow and NumPy release the GIL while they decode and resize, so on a CPU the decoding of
the next few items hides under the inference of the current one instead of adding to it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

LOOKAHEAD = 4  # items decoded ahead: enough to hide decoding, few enough to bound memory


def ahead(
    items: Iterable[T], work: Callable[[T], R], lookahead: int = LOOKAHEAD, workers: int = 1
) -> Generator[tuple[T, Future[R]], None, None]:
    """(item, future of work(item)) in the order of `items`, `lookahead` of them in flight, on
    `workers` threads (one beside a model, which keeps the cores busy itself).

    The caller takes `future.result()` where it handles errors: an error of one item is
    raised there, for that item, and the others go on.
    """
    pending: deque[tuple[T, Future[R]]] = deque()
    source = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode-ahead") as pool:
        try:
            for item in source:
                pending.append((item, pool.submit(work, item)))
                if len(pending) > lookahead:
                    yield pending.popleft()
            while pending:
                yield pending.popleft()
        finally:
            # The caller stopped early (an error, a closed generator): drop what is queued.
            for _, future in pending:
                future.cancel()
