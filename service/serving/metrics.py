"""Prometheus metrics of the selector, served at /metrics in the text exposition format.

Under `rollout serve` each worker is its own process, so `serve` sets PROMETHEUS_MULTIPROC_DIR
before forking: every worker then writes its samples to files there and a scrape of any worker
returns the sum over all of them (prometheus_client's multiprocess mode). Without that variable
(tests, `flask run`) each app keeps its own registry, so several apps in one process never clash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds; fine steps below 25 ms, where the selector's own overhead lives.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True)
class SelectorMetrics:
    registry: CollectorRegistry
    requests: Counter
    errors: Counter
    fallbacks: Counter
    latency: Histogram
    bento_latency: Histogram
    shadow_requests: Counter
    shadow_agreement: Counter
    shadow_dropped: Counter
    shadow_queue_depth: Gauge
    event_queue_depth: Gauge
    events_dropped: Gauge
    circuit_state: Gauge
    routing: Counter
    flag_problems: Counter
    flag_problems_now: Gauge
    # Labelled children of the per-request metrics, looked up once per label set: `labels()`
    # takes a lock and builds a key on every call, twice or three times per request.
    _children: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def served(self, flag: str, variant: str, bento: str, status: int, seconds: float) -> None:
        """One answered predict: counted by status and timed."""
        key = ("served", flag, variant, bento, status)
        pair = self._children.get(key)
        if pair is None:
            labelled = (
                self.requests.labels(flag, variant, bento, str(status)),
                self.latency.labels(flag, variant, bento),
            )
            pair = self._children.setdefault(key, labelled)
        pair[0].inc()
        pair[1].observe(seconds)

    def routed(self, flag: str, reason: str) -> None:
        """One routing decision (resolve or predict), counted by its reason."""
        key = ("routed", flag, reason)
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, self.routing.labels(flag, reason))
        child.inc()

    def bento_call(self, bento: str, seconds: float) -> None:
        """The latency of one call to a bento."""
        key = ("bento", bento)
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, self.bento_latency.labels(bento))
        child.observe(seconds)

    @classmethod
    def create(cls) -> SelectorMetrics:
        registry = CollectorRegistry(auto_describe=True)
        flag_labels = ("flag", "variant", "bento")
        return cls(
            registry=registry,
            requests=Counter(
                "selector_requests",
                "Predict calls answered, by flag, variant, serving bento and HTTP status.",
                (*flag_labels, "status"),
                registry=registry,
            ),
            errors=Counter(
                "selector_errors",
                "Predict calls answered with an error, by flag and error code.",
                ("flag", "code"),
                registry=registry,
            ),
            fallbacks=Counter(
                "selector_fallbacks",
                "Calls the flag's default bento served because the chosen bento failed.",
                ("flag", "variant", "failed_bento", "bento"),
                registry=registry,
            ),
            latency=Histogram(
                "selector_request_latency_seconds",
                "Predict latency inside the selector (routing, forwarding, logging).",
                flag_labels,
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            bento_latency=Histogram(
                "selector_bento_latency_seconds",
                "Latency of the bento call alone, by bento.",
                ("bento",),
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            shadow_requests=Counter(
                "selector_shadow_requests",
                "Mirrored calls to shadow bentos, by outcome (ok, failed).",
                ("flag", "bento", "outcome"),
                registry=registry,
            ),
            shadow_agreement=Counter(
                "selector_shadow_agreement",
                "Shadow answers compared with the live answer: agree=true when every "
                "non-numeric prediction field (e.g. the offer) matches.",
                ("flag", "bento", "agree"),
                registry=registry,
            ),
            shadow_dropped=Counter(
                "selector_shadow_dropped",
                "Shadow copies dropped because the shadow queue was full or shutting down.",
                ("flag", "bento"),
                registry=registry,
            ),
            shadow_queue_depth=Gauge(
                "selector_shadow_queue_depth",
                "Shadow copies waiting to be sent.",
                registry=registry,
                multiprocess_mode="livesum",
            ),
            event_queue_depth=Gauge(
                "selector_event_queue_depth",
                "Events waiting to be written to the event store.",
                registry=registry,
                multiprocess_mode="livesum",
            ),
            events_dropped=Gauge(
                "selector_events_dropped",
                "Events not in the store: spilled (store down) or dead-lettered (refused) to files "
                "for `rollout events replay`, or lost (no file, or the disk failed).",
                ("how",),
                registry=registry,
                multiprocess_mode="livesum",
            ),
            circuit_state=Gauge(
                "selector_circuit_state",
                "Each bento's circuit breaker: 0 closed, 1 half-open, 2 open.",
                ("bento",),
                registry=registry,
                multiprocess_mode="max",
            ),
            routing=Counter(
                "selector_routing_decisions",
                "Routing decisions (resolve and predict), by flag and reason: strategy_variant, "
                "flag_disabled, no_matching_strategy, unknown_bento, no_bento_in_payload, ...",
                ("flag", "reason"),
                registry=registry,
            ),
            flag_problems=Counter(
                "selector_flag_problems",
                "Requests routed around a mistake in the flag (served the stable bento instead), "
                "by flag and reason.",
                ("flag", "reason"),
                registry=registry,
            ),
            flag_problems_now=Gauge(
                "selector_flag_problems_current",
                "Mistakes in each flag's current state (as listed in /readyz), by flag and reason.",
                ("flag", "reason"),
                registry=registry,
                multiprocess_mode="max",
            ),
        )


def exposition(metrics: SelectorMetrics) -> tuple[bytes, str]:
    """The scrape body and its content type: all workers' samples in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST
