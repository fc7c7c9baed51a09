"""A log line per kind of trouble per interval, with how many were held back.

A store that refuses every write would otherwise log one line per event (72,000 lines in 12 s
were seen): the first occurrence of a kind is logged at once, later ones within `interval`
seconds are only counted, and the next line logged says how many there were.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    """Wraps a logger; `clock` is injectable so tests need no sleeps."""

    def __init__(
        self,
        log: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.interval, self.clock = log, interval, clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def error(self, kind: str, message: str, *args: object) -> bool:
        """Log `message % args` unless `kind` was logged within the interval; True if logged."""
        now = self.clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self._held[kind] = self._held.get(kind, 0) + 1
                return False
            held = self._held.pop(kind, 0)
            self._last[kind] = now
        suffix = f" ({held} more like this in the last {self.interval:.0f}s)" if held else ""
        self.log.error(message + suffix, *args)
        return True

    def held(self, kind: str) -> int:
        """Occurrences of `kind` counted but not logged yet."""
        with self._lock:
            return self._held.get(kind, 0)
