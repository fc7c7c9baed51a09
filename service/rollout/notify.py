"""Webhook notifications: every rollout action can tell a team's chat or incident tool.

A rollback, ramp, ship, pending promotion or approval posts one JSON body to a webhook URL.
Delivery runs on a background thread with retries and exponential back-off, so a slow or
broken webhook never blocks or fails the action that triggered it; it only shows up in the
`delivered`, `failed` and `dropped` counts and in the log.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from service.errors import ConfigError

log = logging.getLogger(__name__)

ENV_VAR = "ROLLOUT_WEBHOOK_URL"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Notification:
    """One rollout action, in words and with its evidence (numbers, thresholds, report path)."""

    flag: str
    action: str  # "rollback", "ramp", "ship", "pending-promotion", "approved", "paused", "error"
    summary: str
    actor: str
    details: dict[str, Any] = field(default_factory=dict)
    time: str = field(default_factory=_now)

    def body(self) -> dict[str, Any]:
        """The JSON-ready body: every field plus Slack's `text` line, so Slack needs no adapter."""
        return {**asdict(self), "text": f"[{self.flag}] {self.action}: {self.summary}"}


def _where(url: str) -> str:
    """scheme://host[:port] only: the path (Slack puts its secret there), the query string and
    any user:password may be secrets."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return "<unparseable URL>"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _validated(url: str) -> str:
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # raises ValueError for a port that is not a number in 0-65535
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(
            f"webhook URL {_where(url)!r} (from the url given or {ENV_VAR}) must be an "
            "http:// or https:// URL with a host, e.g. https://hooks.example.com/rollout"
        )
    return url


class Notifier:
    """Posts notifications to one webhook URL from a background thread.

    Once built, never raises into the caller nor blocks it: `send()` only queues. With no URL every
    call is a no-op, so callers need not check whether notifications are configured.
    """

    def __init__(
        self,
        url: str | None,
        *,
        attempts: int = 5,
        backoff: float = 0.5,
        timeout: float = 5.0,
        max_queue: int = 1000,
    ) -> None:
        self.url = None if url is None else _validated(url)
        self.attempts, self.backoff, self.timeout = attempts, backoff, timeout
        self.max_queue = max_queue
        self._queue: queue.SimpleQueue[Notification | None] = queue.SimpleQueue()  # None: stop
        self._lock = threading.Lock()
        self._abandon = threading.Event()  # set when close() times out: stop retrying
        self._thread: threading.Thread | None = None
        self._closed = False
        self._delivered = self._failed = self._dropped = 0

    def __repr__(self) -> str:
        return f"Notifier({_where(self.url) if self.url else None!r})"

    def send(self, notification: Notification) -> None:
        """Queue one notification and return at once; a full queue (or a closed notifier)
        drops it and counts it in `dropped` rather than make the rollout action wait."""
        if self.url is None:
            return
        with self._lock:
            if self._closed or self._queue.qsize() >= self.max_queue:
                self._dropped += 1
                if self._dropped == 1:  # once: during an outage a warning per drop is a flood
                    log.warning("webhook %s: queue full or closed; dropping", _where(self.url))
                return
            if self._thread is None:  # lazily, so a notifier nobody uses costs no thread
                self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
                self._thread.start()
            self._queue.put(notification)

    def close(self, timeout: float = 10.0) -> None:
        """Wait up to `timeout` seconds for queued deliveries, then stop the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandon.set()
            pending = max(self._queue.qsize() - 1, 0)  # less the stop marker
            log.warning("%r: %d notifications abandoned after %.1fs", self, pending, timeout)

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def delivered(self) -> int:
        return self._delivered

    @property
    def failed(self) -> int:
        """Notifications given up on: refused, or still failing after every attempt."""
        return self._failed

    @property
    def dropped(self) -> int:
        return self._dropped

    def _run(self) -> None:
        with requests.Session() as session:  # one pooled connection for the thread's life
            while (notification := self._queue.get()) is not None and not self._abandon.is_set():
                try:
                    ok = self._deliver(session, notification)
                except Exception:  # e.g. details that do not serialise; the thread must live on
                    log.exception("notification for flag %r could not be sent", notification.flag)
                    ok = False
                with self._lock:
                    if ok:
                        self._delivered += 1
                    else:
                        self._failed += 1

    def _deliver(self, session: requests.Session, notification: Notification) -> bool:
        """POST with retries; True once a 2xx answer arrives."""
        assert self.url is not None
        where, what = _where(self.url), f"{notification.action} for flag {notification.flag!r}"
        payload = json.dumps(notification.body(), default=str)  # Paths, numpy scalars, ...
        headers = {"Content-Type": "application/json"}
        for attempt in range(1, max(self.attempts, 1) + 1):
            try:
                # No redirects: requests would turn the POST into a GET, possibly to another host.
                response = session.post(
                    self.url,
                    data=payload,
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                problem = type(exc).__name__  # str(exc) would repeat the URL, query string too
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return True
                if status < 500 and status != 429:  # refused: asking again will not help
                    log.warning("webhook %s refused %s with HTTP %d", where, what, status)
                    return False
                problem = f"HTTP {status}"
            if attempt < self.attempts:
                delay = self.backoff * 2 ** (attempt - 1)
                log.info("webhook %s: %s; retry %d in %.2fs", where, problem, attempt, delay)
                if self._abandon.wait(delay):
                    break
        log.warning("webhook %s: gave up on %s after %s", where, what, problem)
        return False


def notifier_from_environment(url: str | None = None) -> Notifier:
    """A notifier for `url`, else for $ROLLOUT_WEBHOOK_URL, else a no-op one."""
    return Notifier(url or os.environ.get(ENV_VAR) or None)
