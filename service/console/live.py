"""The Live page's model: the selector's own /metrics and /readyz, read over HTTP.

The console is one more monitor of the selector: it scrapes the Prometheus text the selector
serves (summed over its gunicorn workers) and keeps a few minutes of scrapes in memory, so
counters become "in the last N minutes" by subtracting the oldest scrape in the window from the
newest. A background thread scrapes every `live_sample_seconds`; each page view scrapes too.
Nothing here imports the selector's code: the metric names below are its public contract
(README "Metrics"), checked against a real selector by the integration tests.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "selector_requests_total"
FALLBACKS = "selector_fallbacks_total"
BENTO_LATENCY = "selector_bento_latency_seconds"
CIRCUIT = "selector_circuit_state"
CIRCUIT_NAMES = {0: "closed", 1: "half_open", 2: "open"}
# Gauges about events that have not reached the store yet (queue, drops, spill files).
EVENT_GAUGES = ("selector_event", "selector_events", "selector_shadow_queue", "selector_spill")

Labels = tuple[tuple[str, str], ...]
TIMEOUT = 3.0  # seconds per request to the selector


@dataclass(frozen=True)
class Scrape:
    time: float
    samples: dict[tuple[str, Labels], float]
    ready: dict[str, Any] | None  # /readyz's body, whatever its status
    error: str = ""

    def total(self, name: str, **match: str) -> float:
        return sum(
            v
            for (n, labels), v in self.samples.items()
            if n == name and all(dict(labels).get(k) == want for k, want in match.items())
        )

    def select(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(dict(labels), v) for (n, labels), v in self.samples.items() if n == name]


@dataclass(frozen=True)
class BentoLive:
    bento: str
    requests: float
    errors: float  # answered with a 5xx while this bento was the one serving
    fallbacks: float  # calls this bento failed, served by the flag's default instead
    p50_ms: float | None
    p95_ms: float | None
    circuit: str


@dataclass
class LiveView:
    selector_url: str
    window_seconds: float
    covered_seconds: float  # how much of the window the scrapes in memory cover
    since_start: bool = False  # only one scrape yet: totals since the selector started
    error: str = ""
    status: str = ""  # /readyz status
    bentos: list[BentoLive] = field(default_factory=list)
    events: list[tuple[str, float]] = field(default_factory=list)
    readiness: dict[str, Any] = field(default_factory=dict)


class SelectorScraper:
    """Scrapes one selector and keeps the scrapes of the last `window` seconds."""

    def __init__(
        self, selector_url: str, window: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.url, self.window, self.clock = selector_url.rstrip("/"), window, clock
        self._http = requests.Session()
        self._scrapes: deque[Scrape] = deque()
        self._lock = threading.Lock()

    def scrape(self) -> Scrape:
        now = self.clock()
        try:
            metrics = self._http.get(f"{self.url}/metrics", timeout=TIMEOUT)
            ready = self._http.get(f"{self.url}/readyz", timeout=TIMEOUT)
        except requests.RequestException as exc:
            name = type(exc).__name__
            return Scrape(now, {}, None, f"the selector at {self.url} does not answer ({name})")
        if metrics.status_code != 200:
            error = f"{self.url}/metrics answered HTTP {metrics.status_code}"
            return Scrape(now, {}, _json(ready.content), error)
        scrape = Scrape(now, parse(metrics.text), _json(ready.content))
        with self._lock:
            self._scrapes.append(scrape)
            while self._scrapes and self._scrapes[0].time < now - self.window:
                self._scrapes.popleft()
        return scrape

    def view(self) -> LiveView:
        latest = self.scrape()
        view = LiveView(self.url, self.window, 0.0, error=latest.error)
        if latest.ready is not None:
            view.readiness = latest.ready
            view.status = str(latest.ready.get("status", ""))
        if latest.error:
            return view
        with self._lock:
            oldest = self._scrapes[0] if self._scrapes else latest
        view.covered_seconds = latest.time - oldest.time
        if oldest is latest:  # nothing to subtract yet: everything since the selector started
            oldest, view.since_start = Scrape(latest.time, {}, None), True
        view.bentos = bento_rows(latest, oldest)
        view.events = [
            (_name(n, labels), v)
            for (n, labels), v in sorted(latest.samples.items())
            if n.startswith(EVENT_GAUGES) and not n.endswith("_created")
        ]
        return view

    def run(self, every: float, stop: threading.Event) -> None:
        """Scrape every `every` seconds until `stop` is set (the background sampler)."""
        self.scrape()
        while not stop.wait(every):
            self.scrape()


def parse(text: str) -> dict[tuple[str, Labels], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    samples: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def bento_rows(latest: Scrape, oldest: Scrape) -> list[BentoLive]:
    """Per bento, what happened between the two scrapes (a restarted selector: since then)."""

    def delta(name: str, **match: str) -> float:
        now, then = latest.total(name, **match), oldest.total(name, **match)
        return now - then if now >= then else now

    tags = {labels.get("bento") for labels, _ in latest.select(REQUESTS)}
    tags |= {labels.get("bento") for labels, _ in latest.select(CIRCUIT)}
    tags |= set((latest.ready or {}).get("bentos") or {})
    circuits = {labels.get("bento"): v for labels, v in latest.select(CIRCUIT)}
    ready_bentos = (latest.ready or {}).get("bentos") or {}
    rows = []
    for tag in sorted(t for t in tags if t):
        errors = sum(
            delta(REQUESTS, bento=tag, status=labels["status"])
            for labels, _ in latest.select(REQUESTS)
            if labels.get("bento") == tag and labels.get("status", "").startswith("5")
        )
        buckets = _bucket_deltas(latest, oldest, tag)
        circuit = (
            CIRCUIT_NAMES.get(int(circuits[tag]), "?")
            if tag in circuits
            else str((ready_bentos.get(tag) or {}).get("circuit", "-"))
        )
        rows.append(
            BentoLive(
                tag,
                delta(REQUESTS, bento=tag),
                errors,
                delta(FALLBACKS, failed_bento=tag),
                _quantile(buckets, 0.5),
                _quantile(buckets, 0.95),
                circuit,
            )
        )
    return rows


def _bucket_deltas(latest: Scrape, oldest: Scrape, tag: str) -> list[tuple[float, float]]:
    """(upper bound in seconds, cumulative count) of the bento's latency histogram."""
    name = f"{BENTO_LATENCY}_bucket"
    result = []
    for labels, value in latest.select(name):
        if labels.get("bento") != tag:
            continue
        before = oldest.total(name, bento=tag, le=labels["le"])
        result.append((float(labels["le"]), value - before if value >= before else value))
    return sorted(result)


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Milliseconds, interpolated linearly inside the bucket (as Prometheus' histogram_quantile)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank, lower, below = q * buckets[-1][1], 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower * 1000
            share = (rank - below) / (count - below) if count > below else 1.0
            return (lower + (upper - lower) * share) * 1000
        lower, below = upper, count
    return None


def _name(name: str, labels: Labels) -> str:
    inside = ",".join(f"{k}={v}" for k, v in labels)
    return f"{name}{{{inside}}}" if inside else name


def _json(data: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(data)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
