"""Batches of media items: contiguous Id ranges named by partition keys like `000000101-000000200`.

Ranges are contiguous from the first Id on, so every media item Id up to the last batch's end
belongs to exactly one batch, including a row another application committed late with a
lower Id: it is found in its batch, never stranded between two.
"""

from __future__ import annotations

from collections.abc import Sequence

ALL_KEY = "all"  # every media item: what the command line processes

IdRange = tuple[int, int] | None  # inclusive (first, last); None = every media item


def batch_key(first: int, last: int) -> str:
    if not 0 < first <= last:
        raise ValueError(f"a batch is a range 0 < first <= last, got {first}-{last}")
    return f"{first:09d}-{last:09d}"


def parse_batch_key(key: str) -> IdRange:
    """(first, last) of a batch key, or None for ALL_KEY."""
    if key == ALL_KEY:
        return None
    first, sep, last = key.partition("-")
    if not sep or not first.isdigit() or not last.isdigit() or not 0 < int(first) <= int(last):
        raise ValueError(f"not a media item batch key: {key!r} (expected e.g. 000000001-000000100)")
    return int(first), int(last)


def covered_up_to(keys: Sequence[str]) -> int:
    """The last media item Id any batch covers (0 when there is none)."""
    ends = [parse_batch_key(k) for k in keys if k != ALL_KEY]
    return max((r[1] for r in ends if r is not None), default=0)


def plan_batches(pending_ids: Sequence[int], covered: int, size: int) -> list[tuple[int, int]]:
    """New contiguous ranges for pending Ids above `covered`, each holding at most `size` of them.

    The first range starts right after `covered`; each next one right after the previous.
    """
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    fresh = sorted(i for i in set(pending_ids) if i > covered)
    ranges = []
    start = covered + 1
    for offset in range(0, len(fresh), size):
        chunk = fresh[offset : offset + size]
        ranges.append((start, chunk[-1]))
        start = chunk[-1] + 1
    return ranges
