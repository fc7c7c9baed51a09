"""The selector: resolve a flag for a context, forward to the chosen bento, log the exposure.

This is the domain core behind the HTTP API; it knows nothing of Flask. It always has a
fallback: when the chosen bento fails, the flag's default bento serves the same call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from service.config import Settings
from service.errors import BentoUnavailable, RolloutError
from service.flags.definitions import load_flags
from service.serving.catalog import BentoCatalog, Catalog, LiveCatalog
from service.serving.circuit_breaker import CircuitBreakers
from service.serving.contracts import family_of, load_contracts
from service.serving.flag_client import FlagClient
from service.serving.flag_health import FlagHealth
from service.serving.forwarding import BentoCallFailed, BentoForwarder, BentoReply
from service.serving.metrics import CIRCUIT_VALUES, SelectorMetrics
from service.serving.routing import FALLBACK, RoutingDecision, decide
from service.serving.shadow import ShadowCopy, ShadowMirror, score
from service.store.events import Exposure, Outcome, create_engine
from service.store.writer import EventWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    request_id: str
    decision: RoutingDecision
    body: dict[str, Any]
    latency_ms: float
    fallback: bool
    body_json: bytes  # `body` as JSON: the bento's own bytes, not re-encoded


class Selector:
    """Holds the long-lived clients of one process: flags, bento pool, event writer, shadows."""

    def __init__(
        self,
        settings: Settings,
        flags: FlagClient,
        catalog: Catalog,
        forwarder: BentoForwarder,
        events: EventWriter,
    ) -> None:
        self.settings = settings
        self.flags = flags
        self.catalog = catalog
        self.forwarder = forwarder
        self.events = events
        self.metrics = SelectorMetrics.create()
        self.health = FlagHealth(flags, catalog, self.metrics, settings.environment)
        self.breakers = CircuitBreakers(settings.circuit_failures, settings.circuit_reset_seconds)
        self.contracts = load_contracts(settings.bentos_dir)
        self.shadows = ShadowMirror(
            catalog,
            events,
            self.metrics,
            timeout=settings.shadow_timeout,
            queue_size=settings.shadow_queue_size,
            threads=settings.shadow_threads,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Selector:
        flag_set = None if settings.unleash_url else load_flags(settings.flags_dir)
        catalog = _catalog(settings)
        selector = cls(
            settings,
            FlagClient(settings, flag_set),
            catalog,
            BentoForwarder(settings.forward_timeout),
            EventWriter(
                create_engine(settings.event_store_url),
                settings.event_batch_size,
                spill_dir=settings.spill_dir,
                dead_letter=settings.dead_letter_file,
                queue_size=settings.event_queue_size,
                retry_seconds=settings.store_retry_seconds,
            ),
        )
        selector.flags.start()
        return selector

    def resolve(self, flag: str, context: dict[str, Any]) -> RoutingDecision:
        self.health.problems()  # a new flag state or catalog: its mistakes are logged now
        decision = decide(self.flags, self.catalog, flag, context)
        self.health.routed(decision)
        return decision

    def predict(
        self, flag: str, context: dict[str, Any], inputs: Any, request_id: str
    ) -> Prediction:
        """Serve one prediction; every outcome of the call is logged as an exposure."""
        started = time.perf_counter()
        decision = self.resolve(flag, context)
        try:
            self._check_inputs(decision.bento, inputs)
            reply, served = self._serve(decision, inputs, request_id)
        except RolloutError as exc:
            self._record(
                request_id, decision, context, inputs, started, exc.status, error=exc.message
            )
            self._observe(decision, exc.status, started, exc.code)
            raise
        fallback = served.reason == FALLBACK
        live = self._record(
            request_id, served, context, inputs, started, 200, reply=reply, fallback=fallback
        )
        self._observe(served, 200, started)
        if fallback:
            self.metrics.fallbacks.labels(flag, served.variant, decision.bento, served.bento).inc()
        self._mirror(live, reply)
        return Prediction(
            request_id, served, reply.body, _ms_since(started), fallback, reply.json_bytes()
        )

    def _check_inputs(self, bento: str, inputs: Any) -> None:
        """The family's input contract, before any bento sees the inputs (422 naming the field)."""
        contract = self.contracts.get(family_of(bento))
        if contract is not None:
            contract.check(inputs)

    def _serve(
        self, decision: RoutingDecision, inputs: Any, request_id: str
    ) -> tuple[BentoReply, RoutingDecision]:
        """The chosen bento, or on its failure the flag's default bento, in the same call."""
        if decision.bento == decision.default_bento or not decision.default_bento:
            return self._call_default(decision, inputs, request_id, None), decision
        if not self.breakers.allow(decision.bento):
            # An open circuit: serve the default at once instead of waiting for a timeout.
            # Not logged per request (the failures that opened it were); /metrics counts these.
            problem = "its circuit breaker is open after repeated failures"
        else:
            try:
                return self._call(decision.bento, inputs, request_id), decision
            except BentoCallFailed as exc:
                problem = str(exc)
                log.warning(
                    "bento %s failed, serving %s instead: %s",
                    decision.bento,
                    decision.default_bento,
                    problem,
                )
        fallback = replace(
            decision,
            bento=decision.default_bento,
            reason=FALLBACK,
            detail=f"{decision.bento} failed: {problem}",
        )
        return self._call_default(fallback, inputs, request_id, fallback.detail), fallback

    def _call_default(
        self, decision: RoutingDecision, inputs: Any, request_id: str, why: str | None
    ) -> BentoReply:
        """The last resort: called even when its breaker is open, since nothing else is left."""
        try:
            return self._call(decision.bento, inputs, request_id)
        except BentoCallFailed as exc:
            prefix = f"{why}; " if why else ""
            raise BentoUnavailable(
                f"{prefix}the default bento '{decision.bento}' of flag "
                f"'{decision.flag}' is unavailable: {exc}"
            ) from exc

    def _call(self, tag: str, inputs: Any, request_id: str) -> BentoReply:
        url = self.catalog.url(tag)
        if url is None:
            raise BentoCallFailed(f"bento '{tag}' has no endpoint in the catalog")
        try:
            reply = self.forwarder.predict(url, inputs, request_id)
        except BentoCallFailed:
            self.breakers.failure(tag)
            raise
        # A 4xx (InputRejected) passes through untouched: the bento answered, so it is healthy.
        self.breakers.success(tag)
        self.metrics.bento_call(tag, reply.latency_ms / 1000)
        return reply

    def _mirror(self, live: Exposure, reply: BentoReply) -> None:
        state = self.flags.flag(live.flag)
        for bento in state.shadows if state else ():
            self.shadows.mirror(ShadowCopy(bento, live, reply.body))

    def _observe(
        self, decision: RoutingDecision, status: int, started: float, code: str | None = None
    ) -> None:
        seconds = time.perf_counter() - started
        self.metrics.served(decision.flag, decision.variant, decision.bento, status, seconds)
        if code is not None:
            self.metrics.errors.labels(decision.flag, code).inc()
        self.metrics.event_queue_depth.set(self.events.depth)

    def _record(
        self,
        request_id: str,
        decision: RoutingDecision,
        context: dict[str, Any],
        inputs: Any,
        started: float,
        status: int,
        *,
        reply: BentoReply | None = None,
        fallback: bool = False,
        error: str | None = None,
    ) -> Exposure:
        properties = context.get("properties", {})
        exposure = Exposure(
            request_id=request_id,
            flag=decision.flag,
            environment=self.settings.environment,
            variant=decision.variant,
            bento=decision.bento,
            reason=decision.reason,
            status=status,
            user_id=context.get("userId"),
            session_id=context.get("sessionId"),
            region=properties.get("region"),
            segment=properties.get("segment"),
            properties=properties,
            latency_ms=_ms_since(started),
            prediction=score(reply.body) if reply else None,
            inputs=inputs,
            fallback=fallback,
            error=error or decision.detail,
        )
        self.events.record(exposure)
        return exposure

    def record_outcomes(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            self.events.record(outcome)

    def readiness(self) -> dict[str, Any]:
        return {
            "flags_loaded": self.flags.ready,
            "mode": self.flags.mode,
            "flags": sorted(self.flags.flags()),
            **self.health.readiness(),
            "bentos": {
                tag: {"url": url, "circuit": self.breakers.state(tag)}
                for tag, url in self.catalog.endpoints.items()
            },
            "event_queue_depth": self.events.depth,
            "shadow_queue_depth": self.shadows.depth,
            "event_store": self.events.health().as_dict(),
        }

    def answering_bento(self) -> str | None:
        """The first bento of the catalog that answers its readiness check; None if none does
        (then every predict would fail: /readyz must not say ready)."""
        endpoints = self.catalog.endpoints.items()
        return next((tag for tag, url in endpoints if self.forwarder.answers(url)), None)

    def refresh_gauges(self) -> None:
        """Point-in-time values, set just before a scrape (counters need no refresh)."""
        self.metrics.event_queue_depth.set(self.events.depth)
        self.metrics.shadow_queue_depth.set(self.shadows.depth)
        self.metrics.events_dropped.labels("dead_letter").set(self.events.dead_lettered)
        self.metrics.events_dropped.labels("lost").set(self.events.dropped)
        self.metrics.events_dropped.labels("spilled").set(self.events.spilled)
        self.health.problems()
        for tag in self.catalog.endpoints:
            state = self.breakers.state(tag)
            self.metrics.circuit_state.labels(tag).set(CIRCUIT_VALUES[state])

    def close(self) -> None:
        """Stop polling, send queued shadow copies, close pools, write every buffered event."""
        self.flags.close()
        self.shadows.close()
        self.forwarder.close()
        self.events.close()


def _catalog(settings: Settings) -> LiveCatalog:
    """ROLLOUT_BENTO_URLS (fixed) over the catalog file, and the registry's stable versions."""
    fixed = BentoCatalog.parse(settings.bento_urls or "")
    return LiveCatalog(
        fixed, settings.catalog_file, settings.bentos_dir, float(settings.refresh_interval)
    )


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
