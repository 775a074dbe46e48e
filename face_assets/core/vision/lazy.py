"""Models that load on first use, once per process."""

from __future__ import annotations

import logging
import os
import threading
import time

logger = logging.getLogger(__name__)


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up chatter out of the user's logs; call before importing it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
