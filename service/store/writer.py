"""The event writer: requests append to a bounded queue, one thread writes batches to the store.

Logging never blocks the request path, and no accepted event is lost:
- a batch the store cannot take (down, unwritable, table gone) is retried for a few seconds,
  then appended to the spill file (fsync'd) and the writer moves on, so the queue drains
  even while the store is down, and a SIGTERM finds little to write;
- a full queue sends the event straight to the spill file from the request thread;
- rows the store refuses one by one (a constraint) go to the dead-letter file;
- `close()` writes what is queued, spilling at once (no retries) while the store fails, and
  spills whatever the writer thread could not finish in time itself.
Each batch gets an id, written in `event_batches` in the batch's transaction: a retry after a
commit whose result never came back finds it and stops there, and a batch spilled after an
attempt carries it into the spill file, so its replay is skipped if the attempt did commit.
`rollout events replay` brings spilled and dead-lettered events back, idempotently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from service.store import bulk
from service.store.events import Exposure, Outcome, new_event_id
from service.store.rate_limited_log import RateLimitedLog
from service.store.spill import SpillFile

log = logging.getLogger(__name__)

# Errors about the rows themselves; any other error is the store failing as a whole.
_REFUSED = (sa.exc.IntegrityError, sa.exc.DataError)

Event = Exposure | Outcome
_EVENT_TYPES = (Exposure, Outcome)
_STOP = object()


@dataclass(frozen=True)
class StoreHealth:
    """What /readyz says about the event store."""

    failing: bool
    error: str | None
    failing_since: float | None
    spilled: int
    dead_lettered: int
    lost: int
    queue_depth: int

    def as_dict(self) -> dict[str, Any]:
        return {"status": "failing" if self.failing else "ok", **asdict(self)}


class RecentExposures:
    """Request ids and (flag, user) pairs this process served lately, for the outcome check.

    Two generations of dicts: when the current one is full it becomes the old one, so memory
    stays bounded and a lookup is two dict probes. Each request adds two keys, so the default
    remembers a worker's last 2,000-4,000 requests: more than a second at full load, while an
    exposure reaches the store within a batch (and the check asks the store for the rest).
    Small on purpose: at 200,000 keys every worker grew by about 280 bytes a request for its
    first 200,000 requests, and even at 20,000 the generations' churn kept fragmenting the heap
    of a threaded worker, a slow creep of RSS (the memory soak of scripts/benchmarks/selector.py).
    """

    def __init__(self, size: int = 4_000) -> None:
        self.size = size
        self._current: dict[tuple[str | None, ...], Any] = {}
        self._old: dict[tuple[str | None, ...], Any] = {}

    def add(self, exposure: Exposure) -> None:
        if len(self._current) >= self.size:
            self._old, self._current = self._current, {}
        self._current[("request", exposure.request_id)] = exposure.flag
        self._current[("user", exposure.flag, exposure.user_id)] = exposure.ts

    def flag_of(self, request_id: str) -> str | None:
        """The flag of a request served here lately; None if not."""
        key = ("request", request_id)
        return self._current.get(key) or self._old.get(key)

    def exposed_at(self, flag: str | None, user_id: str | None) -> float | None:
        """When this process last exposed `user_id` in `flag`; None if not lately."""
        key = ("user", flag, user_id)
        return self._current.get(key) or self._old.get(key)


class EventWriter:
    """Appends events from any thread; a background thread writes them in batches."""

    def __init__(
        self,
        engine: sa.Engine,
        batch_size: int = 500,
        *,
        spill_dir: Path | None = None,
        dead_letter: Path | None = None,
        queue_size: int = 100_000,
        retry_seconds: float = 2.0,
        linger: float = 0.05,
    ) -> None:
        self.engine = engine
        self.linger = linger
        self.batch_size = batch_size
        self.spill = SpillFile(spill_dir) if spill_dir else None
        self.dead_letter = SpillFile(dead_letter.parent, dead_letter) if dead_letter else None
        self.retry_seconds = retry_seconds
        self.recent = RecentExposures()
        self.errors = RateLimitedLog(log)
        # A deque and a wake-up event rather than queue.Queue: an append is one atomic call with
        # no lock, and the writer drains a whole batch at once (Queue took a lock and a
        # condition per event on both sides: a third of the writer's time at 100,000/s).
        self._queue: deque[Any] = deque()
        self._queue_size = queue_size
        self._wake = threading.Event()
        self._hurry = threading.Event()  # a flush or close is waiting: no lingering
        self._written = 0
        self.dropped = 0  # lost: no spill file configured, or the disk failed too
        self._failing_since: float | None = None
        self._last_error: str | None = None
        self._inflight: tuple[str, list[Event]] | None = None  # (batch id, events)
        self._stopping = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        self._thread.start()

    # --- the request path ---------------------------------------------------------------

    def record(self, event: Event) -> None:
        """Queue one event; returns at once. A full queue spills it to disk instead."""
        if isinstance(event, Exposure) and not event.shadow:
            self.recent.add(event)
        if len(self._queue) >= self._queue_size:
            self.errors.error("queue_full", "event queue full; spilling events to disk")
            self._spill([event])
            return
        self._put(event)

    def _put(self, item: Any) -> None:
        self._queue.append(item)
        # A flush or the stop, or a full batch waiting: write without lingering for more.
        if not isinstance(item, _EVENT_TYPES) or len(self._queue) == self.batch_size:
            self._hurry.set()
        if not self._wake.is_set():  # the writer re-checks the deque after clearing it
            self._wake.set()

    # --- state --------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def written(self) -> int:
        return self._written

    @property
    def spilled(self) -> int:
        return self.spill.count if self.spill else 0

    @property
    def dead_lettered(self) -> int:
        return self.dead_letter.count if self.dead_letter else 0

    def health(self) -> StoreHealth:
        return StoreHealth(
            failing=self._failing_since is not None,
            error=self._last_error,
            failing_since=self._failing_since,
            spilled=self.spilled,
            dead_lettered=self.dead_lettered,
            lost=self.dropped,
            queue_depth=self.depth,
        )

    # --- shutdown -----------------------------------------------------------------------

    def close(self, timeout: float = 15.0) -> None:
        """Write (or spill) everything still queued, then stop the writer thread.

        `timeout` stays well inside gunicorn's graceful timeout (30 s): what the thread has
        not finished by then is spilled from here, so the worker never dies holding events.
        """
        if self._closed:
            return
        self._closed = True
        self._stopping = True  # no more retries: a failing store means spill at once
        self._put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            inflight, left = self._inflight, self._drain_queue()
            count = len(left) + (len(inflight[1]) if inflight else 0)
            log.error("event writer did not finish in %.0fs; spilling %d events", timeout, count)
            if inflight:  # it may still commit: spilled with its batch id, replay skips it then
                self._spill(inflight[1], inflight[0])
            self._spill(left)

    def flush(self, timeout: float = 30.0) -> None:
        """Block until everything queued so far is written (for tests and the simulator)."""
        done = threading.Event()
        self._put(done)
        done.wait(timeout)

    def _drain_queue(self) -> list[Event]:
        items: list[Event] = []
        while True:
            try:
                item = self._queue.popleft()
            except IndexError:
                return items
            if isinstance(item, _EVENT_TYPES):
                items.append(item)

    # --- the writer thread --------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, markers, stopping = self._take_batch()
            if batch:
                self._inflight = (new_event_id(), batch)
                self._write(*self._inflight)
                self._inflight = None
            for marker in markers:
                marker.set()

    def _take_batch(self) -> tuple[list[Event], list[threading.Event], bool]:
        """Block for the first item, linger up to `linger` seconds for more, take a batch.

        Under load events pile up while a batch is being written, so batches grow by
        themselves. At a few hundred requests a second they would not: each event would be a
        transaction of its own, committed while its request is still answering, and the two
        threads would take turns on the GIL (0.14 ms of a worker's CPU per predict at
        concurrency 1). Lingering makes a few commits a second of many events instead; a flush
        or close cuts it short, and the outcome check looks at this process's recent exposures
        before the store, so no reader waits on it.
        """
        while not self._queue:
            self._wake.wait()
            self._wake.clear()
        if len(self._queue) < self.batch_size and not self._hurry.is_set():
            self._hurry.wait(self.linger)
        self._hurry.clear()
        items: list[Any] = []
        pop = self._queue.popleft
        while len(items) < self.batch_size:
            try:
                items.append(pop())
            except IndexError:
                break
        # A tuple, not `Exposure | Outcome`: isinstance with a union was 3x slower per event.
        batch = [i for i in items if isinstance(i, _EVENT_TYPES)]
        if len(batch) == len(items):  # no flush markers, no stop: the usual batch
            return batch, [], False
        markers = [i for i in items if isinstance(i, threading.Event)]
        return batch, markers, any(i is _STOP for i in items)

    def _write(self, batch_id: str, batch: list[Event]) -> None:
        """Insert a batch; retry a failing store briefly, then spill; split refused batches."""
        deadline = time.monotonic() + (0 if self._stopping else self.retry_seconds)
        delay = 0.05
        while True:
            try:
                self._insert(batch_id, batch)
            except bulk.BatchAlreadyStored:  # an attempt whose commit was not confirmed did commit
                self._written += len(batch)
                self._recovered()
                return
            except _REFUSED:
                self._isolate_refused(batch)
                return
            except Exception as exc:  # the store failing as a whole: down, read-only, no table
                self._failing(exc, len(batch))
                if self._stopping or time.monotonic() + delay > deadline:
                    self._spill(batch, batch_id)
                    return
                time.sleep(delay)  # back-off between attempts at a failing store
                delay = min(delay * 2, 1.0)
            else:
                self._written += len(batch)
                self._recovered()
                return

    def _insert(self, batch_id: str, batch: list[Event]) -> None:
        with self.engine.begin() as conn:
            bulk.claim_batch(conn, batch_id)
            bulk.write(conn, batch)

    def _isolate_refused(self, batch: list[Event]) -> None:
        """Halve a refused batch until the refused rows are found; write all the others."""
        if len(batch) == 1:
            self.errors.error("refused", "the event store refused an event; dead-lettered")
            self._dead_letter(batch)
            return
        half = len(batch) // 2
        for part in (batch[:half], batch[half:]):
            part_id = new_event_id()  # a new batch: the refused one committed nothing
            try:
                self._insert(part_id, part)
                self._written += len(part)
            except _REFUSED:
                self._isolate_refused(part)
            except Exception as exc:
                self._failing(exc, len(part))
                self._spill(part, part_id)

    def _failing(self, exc: Exception, count: int) -> None:
        self._last_error = _describe(exc)
        if self._failing_since is None:
            self._failing_since = time.time()
        self.errors.error(
            "store", "the event store failed writing %d events: %s", count, self._last_error
        )

    def _recovered(self) -> None:
        if self._failing_since is not None:
            held = self.errors.held("store")
            log.warning(
                "the event store takes writes again after %.0fs (%d failures not logged); "
                "replay spilled events with `rollout events replay`",
                time.time() - self._failing_since,
                held,
            )
            self._failing_since, self._last_error = None, None

    def _spill(self, events: list[Event], batch_id: str | None = None) -> None:
        """Keep `events` on disk; `batch_id` when they were sent to the store under it."""
        self._keep(self.spill, events, "spill", batch_id)

    def _dead_letter(self, events: list[Event]) -> None:
        self._keep(self.dead_letter, events, "dead-letter")

    def _keep(
        self, target: SpillFile | None, events: list[Event], what: str, batch_id: str | None = None
    ) -> None:
        if target is None:
            self.dropped += len(events)
            self.errors.error(f"lost-{what}", "no %s file: %d events lost", what, len(events))
            return
        try:
            target.append(events, batch_id)
        except OSError as exc:
            self.dropped += len(events)
            log.error("writing %d events to %s failed (%s); they are lost", len(events), what, exc)


def _describe(exc: Exception) -> str:
    """The error's kind and first line: enough to act on, never the statement's parameters."""
    cause = getattr(exc, "orig", None) or exc
    first = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first[:200]}"
