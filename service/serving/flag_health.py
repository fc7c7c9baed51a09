"""Mistakes in flags made loud: logged (rate-limited), counted in /metrics, listed in /readyz.

Two views of the same mistakes. `lint` lists what is wrong in every flag's current state
(recomputed only when the feature state or the catalog changes), for /readyz and a gauge; each
new one is logged once. `routed_around` counts each request a mistake actually affected, by
flag and reason, and logs it at most once per `LOG_EVERY_SECONDS` per flag, reason and variant.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from service.flags.routes import RoutingProblem, lint
from service.serving.catalog import Catalog
from service.serving.flag_client import FlagClient
from service.serving.metrics import SelectorMetrics
from service.serving.routing import RoutingDecision

log = logging.getLogger(__name__)
LOG_EVERY_SECONDS = 60.0


class FlagHealth:
    """Per process: the flags' current problems, and the rate limit of their log lines."""

    def __init__(
        self,
        flags: FlagClient,
        catalog: Catalog,
        metrics: SelectorMetrics,
        environment: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.flags = flags
        self.catalog = catalog
        self.metrics = metrics
        self.environment = environment
        self.clock = clock
        self._key: tuple[int, int] | None = None
        self._problems: dict[str, list[RoutingProblem]] = {}
        self._last_logged: dict[tuple[str, ...], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def problems(self) -> dict[str, list[RoutingProblem]]:
        """flag -> its problems now (flags without any are left out)."""
        key = (self.flags.generation, self.catalog.version)
        if key != self._key:
            with self._lock:
                self._recompute(key)
        return self._problems

    def _recompute(self, key: tuple[int, int]) -> None:
        known, stable = set(self.catalog.endpoints), self.catalog.stable
        found = {}
        for name, routes in self.flags.flags().items():
            listed = lint(routes, self.environment, known, stable, self.flags.family(name))
            if listed:
                found[name] = listed
        old = {p for listed in self._problems.values() for p in listed}
        for problem in (p for listed in found.values() for p in listed if p not in old):
            log.warning("flag problem: %s", problem.line())
        self._set_gauge(found)
        self._problems, self._key = found, key

    def _set_gauge(self, found: dict[str, list[RoutingProblem]]) -> None:
        counts: dict[tuple[str, str], int] = {}
        for p in (p for listed in self._problems.values() for p in listed):
            counts[(p.flag, p.reason)] = 0  # a fixed problem drops to 0, not out of sight
        for p in (p for listed in found.values() for p in listed):
            counts[(p.flag, p.reason)] = counts.get((p.flag, p.reason), 0) + 1
        for (flag, reason), n in counts.items():
            self.metrics.flag_problems_now.labels(flag, reason).set(n)

    def routed(self, decision: RoutingDecision) -> None:
        """Count the decision's reason; count and log (rate-limited) a mistake it avoided."""
        self.metrics.routed(decision.flag, decision.reason)
        problem = decision.problem
        if problem is None:
            return
        self.metrics.flag_problems.labels(decision.flag, problem.reason).inc()
        key = (decision.flag, problem.reason, problem.variant, str(problem.tag))
        now = self.clock()
        with self._lock:
            last, suppressed = self._last_logged.get(key, (-LOG_EVERY_SECONDS, 0))
            if now - last < LOG_EVERY_SECONDS:
                self._last_logged[key] = (last, suppressed + 1)
                return
            self._last_logged[key] = (now, 0)
        log.warning(
            "flag %s environment %s strategy %s variant %s tag %s: %s: %s; served %s instead%s",
            decision.flag,
            self.environment,
            problem.strategy,
            problem.variant,
            problem.tag,
            problem.reason,
            problem.message,
            decision.bento,
            f" ({suppressed} more since the last line)" if suppressed else "",
        )

    def readiness(self) -> dict[str, Any]:
        """For /readyz: each flag's status and its problems."""
        problems = self.problems()
        return {
            "flag_status": {
                name: "degraded" if name in problems else "ok"
                for name in sorted(self.flags.flags())
            },
            "flag_problems": {
                name: [p.as_dict() for p in listed] for name, listed in sorted(problems.items())
            },
        }
