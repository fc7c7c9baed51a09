"""A circuit breaker per bento: stop sending traffic to a bento that keeps failing.

closed    -> every call goes through; `failure_threshold` failures in a row open the circuit.
open      -> no call goes through (the flag's default serves at once, without waiting for a
             timeout) until `reset_seconds` have passed.
half_open -> exactly one probe call goes through; its success closes the circuit, its failure
             opens it again for another `reset_seconds`.

Per process: each server worker learns about a dead bento from its own traffic, which costs
at most `failure_threshold` fallbacks per worker and needs no shared state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


@dataclass
class BreakerState:
    state: str = CLOSED
    failures: int = 0  # consecutive
    opened_at: float = 0.0
    probing: bool = False  # a half-open probe is in flight


class CircuitBreakers:
    """The breakers of every bento a process talks to, keyed by bento tag. Thread-safe."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, BreakerState] = {}

    def allow(self, bento: str) -> bool:
        """May a call go to `bento` now? In half-open, only the first caller gets the probe."""
        with self._lock:
            breaker = self._states.setdefault(bento, BreakerState())
            if breaker.state == OPEN and self._clock() - breaker.opened_at >= self.reset_seconds:
                breaker.state, breaker.probing = HALF_OPEN, False
            if breaker.state == HALF_OPEN:
                if breaker.probing:
                    return False
                breaker.probing = True
                return True
            return breaker.state == CLOSED

    def success(self, bento: str) -> None:
        with self._lock:
            self._states[bento] = BreakerState()

    def failure(self, bento: str) -> None:
        with self._lock:
            breaker = self._states.setdefault(bento, BreakerState())
            breaker.failures += 1
            if breaker.state == HALF_OPEN or breaker.failures >= self.failure_threshold:
                breaker.state, breaker.opened_at, breaker.probing = OPEN, self._clock(), False

    def state(self, bento: str) -> str:
        with self._lock:
            breaker = self._states.get(bento)
            if breaker is None:
                return CLOSED
            if breaker.state == OPEN and self._clock() - breaker.opened_at >= self.reset_seconds:
                return HALF_OPEN  # the next call will probe
            return breaker.state

    def states(self, bentos: list[str]) -> dict[str, str]:
        return {bento: self.state(bento) for bento in bentos}
