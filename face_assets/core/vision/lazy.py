"""Models that load on first use, once per process."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up chatter out of the user's logs; call before importing it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextmanager
def _stderr_closed() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the block: C++ libraries write there directly."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def import_tensorflow() -> Any:
    """The tensorflow module. Its first import prints absl and oneDNN lines from C++ before any
    setting can stop them (TF_CPP_MIN_LOG_LEVEL no longer does): they are kept off stderr unless
    the product logs at INFO (-v). An import that fails still raises, with its message."""
    quiet_tensorflow()
    if "tensorflow" not in sys.modules and not logging.getLogger("face_assets").isEnabledFor(logging.INFO):
        with _stderr_closed():
            import tensorflow  # noqa: F401
    import tensorflow as tf

    return tf


class LazyModel:
    """A cheap constructor; `load()` is idempotent and does the expensive work once."""

    name = "model"

    def __init__(self) -> None:
        self._loaded = False
        # Two threads may ask for a model neither has loaded; only one must build it.
        self._lock = threading.Lock()
        self.load_seconds = 0.0

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            started = time.perf_counter()
            quiet_tensorflow()
            self._load()
            self.load_seconds = time.perf_counter() - started
            self._loaded = True
            logger.info("loaded %s in %.1f s", self.name, self.load_seconds)

    def _load(self) -> None:
        raise NotImplementedError
