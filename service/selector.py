"""The selector: resolve a flag for a context, forward to the chosen bento, log the exposure.

This is the domain core behind the HTTP API; it knows nothing of Flask. It always has a
fallback: when the chosen bento fails, the flag's default bento serves the same call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from service.catalog import BentoCatalog
from service.config import Settings
from service.errors import BentoUnavailable, RolloutError
from service.events import EventWriter, Exposure, Outcome, create_engine
from service.flag_client import FlagClient
from service.flag_definitions import load_flags
from service.forwarding import BentoCallFailed, BentoForwarder, BentoReply
from service.routing import FALLBACK, RoutingDecision, decide

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    request_id: str
    decision: RoutingDecision
    body: dict[str, Any]
    latency_ms: float
    fallback: bool


class Selector:
    """Holds the long-lived clients of one process: flags, bento pool, event writer."""

    def __init__(
        self,
        settings: Settings,
        flags: FlagClient,
        catalog: BentoCatalog,
        forwarder: BentoForwarder,
        events: EventWriter,
    ) -> None:
        self.settings = settings
        self.flags = flags
        self.catalog = catalog
        self.forwarder = forwarder
        self.events = events

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
                dead_letter=settings.data_dir / "events-dead-letter.jsonl",
            ),
        )
        selector.flags.start()
        return selector

    def resolve(self, flag: str, context: dict[str, Any]) -> RoutingDecision:
        return decide(self.flags, self.catalog, flag, context)

    def predict(
        self, flag: str, context: dict[str, Any], inputs: Any, request_id: str
    ) -> Prediction:
        """Serve one prediction; every outcome of the call is logged as an exposure."""
        started = time.perf_counter()
        decision = self.resolve(flag, context)
        try:
            reply, served = self._serve(decision, inputs, request_id)
        except RolloutError as exc:
            self._record(
                request_id, decision, context, inputs, started, exc.status, error=exc.message
            )
            raise
        fallback = served.reason == FALLBACK
        self._record(
            request_id, served, context, inputs, started, 200, reply=reply, fallback=fallback
        )
        return Prediction(request_id, served, reply.body, _ms_since(started), fallback)

    def _serve(
        self, decision: RoutingDecision, inputs: Any, request_id: str
    ) -> tuple[BentoReply, RoutingDecision]:
        """The chosen bento, or on its failure the flag's default bento, in the same call."""
        try:
            return self._call(decision.bento, inputs, request_id), decision
        except BentoCallFailed as exc:
            if decision.bento == decision.default_bento:
                raise BentoUnavailable(
                    f"the default bento '{decision.bento}' of flag "
                    f"'{decision.flag}' is unavailable: {exc}"
                ) from exc
            log.warning(
                "bento %s failed, serving %s instead: %s",
                decision.bento,
                decision.default_bento,
                exc,
            )
            fallback = replace(
                decision,
                bento=decision.default_bento,
                reason=FALLBACK,
                detail=f"{decision.bento} failed: {exc}",
            )
        try:
            return self._call(fallback.bento, inputs, request_id), fallback
        except BentoCallFailed as exc:
            raise BentoUnavailable(
                f"{fallback.detail}; the default bento '{fallback.bento}' failed too: {exc}"
            ) from exc

    def _call(self, tag: str, inputs: Any, request_id: str) -> BentoReply:
        url = self.catalog.url(tag)
        if url is None:
            raise BentoCallFailed(f"bento '{tag}' has no endpoint in the catalog")
        return self.forwarder.predict(url, inputs, request_id)

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
    ) -> None:
        properties = context.get("properties", {})
        self.events.record(
            Exposure(
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
                prediction=_score(reply.body) if reply else None,
                inputs=inputs,
                fallback=fallback,
                error=error or decision.detail,
            )
        )

    def record_outcomes(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            self.events.record(outcome)

    def readiness(self) -> dict[str, Any]:
        return {
            "flags_loaded": self.flags.ready,
            "mode": self.flags.mode,
            "flags": sorted(self.flags.flags()),
            "bentos": self.catalog.endpoints,
            "event_queue_depth": self.events.depth,
        }

    def close(self) -> None:
        """Stop polling, close pools, and write every buffered event."""
        self.flags.close()
        self.forwarder.close()
        self.events.close()


def _catalog(settings: Settings) -> BentoCatalog:
    if settings.bento_urls:
        return BentoCatalog.parse(settings.bento_urls)
    return BentoCatalog.load(settings.catalog_file)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _score(body: dict[str, Any]) -> float | None:
    """The first numeric field of the first prediction, logged for drift and calibration."""
    predictions = body.get("predictions")
    if isinstance(predictions, list) and predictions and isinstance(predictions[0], dict):
        for value in predictions[0].values():
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    return None
