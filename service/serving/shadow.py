"""Shadow deployments: each live request mirrored to the flag's shadow bentos, off its path.

The live request only puts a copy on a bounded queue (`put_nowait`); when the queue is full the
copy is dropped and counted, so a slow or dead shadow can never delay, fail or change a live
answer. A few threads send the copies and log each answer as an exposure with shadow=True and
the live request's id, so the validation report can pair the two predictions.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from service.serving.catalog import Catalog
from service.serving.forwarding import BentoCallFailed, BentoForwarder, BentoRejected, BentoReply
from service.serving.metrics import SelectorMetrics
from service.store.events import Exposure, new_event_id
from service.store.writer import EventWriter

log = logging.getLogger(__name__)

SHADOW_VARIANT = "shadow"
SHADOW_REASON = "shadow"
FAILED_STATUS = 599  # no HTTP answer (refused, timed out): the convention of proxies' logs


@dataclass(frozen=True)
class ShadowCopy:
    bento: str
    live: Exposure  # the live exposure, whose request id and context the shadow row repeats
    live_body: dict[str, Any] | None


class ShadowMirror:
    """A bounded queue of shadow copies and the threads that send them."""

    def __init__(
        self,
        catalog: Catalog,
        events: EventWriter,
        metrics: SelectorMetrics,
        *,
        timeout: float = 2.0,
        queue_size: int = 1000,
        threads: int = 2,
    ) -> None:
        self.catalog, self.events, self.metrics = catalog, events, metrics
        # Its own pool: shadow traffic never takes a connection the live path is waiting for.
        self.forwarder = BentoForwarder(timeout, pool_size=threads)
        self._queue: queue.Queue[ShadowCopy | None] = queue.Queue(queue_size)
        self.dropped = 0
        self._threads = [
            threading.Thread(target=self._run, name=f"shadow-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def mirror(self, copy: ShadowCopy) -> None:
        """Queue one copy; never blocks. A full queue drops the copy, not the live request."""
        try:
            self._queue.put_nowait(copy)
        except queue.Full:
            self._drop(copy)
        self.metrics.shadow_queue_depth.set(self._queue.qsize())

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (bounded by `timeout`), then stop the threads."""
        deadline = time.monotonic() + timeout
        for _ in self._threads:
            self._put_stop(deadline)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        while True:  # whatever is left after the deadline is dropped, and counted
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                break
            if left is not None:
                self._drop(left)
        self.forwarder.close()

    def _put_stop(self, deadline: float) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=max(0.01, deadline - time.monotonic()))

    def _drop(self, copy: ShadowCopy) -> None:
        self.dropped += 1
        self.metrics.shadow_dropped.labels(copy.live.flag, copy.bento).inc()

    def _run(self) -> None:
        while (copy := self._queue.get()) is not None:
            try:
                self._send(copy)
            except Exception:  # a shadow must never take its thread down
                log.exception("shadow call to %s failed unexpectedly", copy.bento)

    def _send(self, copy: ShadowCopy) -> None:
        started = time.perf_counter()
        reply, status, error = self._call(copy)
        latency_ms = (time.perf_counter() - started) * 1000
        self.events.record(
            replace(
                copy.live,
                variant=SHADOW_VARIANT,
                bento=copy.bento,
                reason=SHADOW_REASON,
                status=status,
                latency_ms=latency_ms,
                prediction=score(reply.body) if reply else None,
                shadow=True,
                fallback=False,
                error=error,
                ts=time.time(),
                event_id=new_event_id(),  # an event of its own (ids are unique per table)
            )
        )
        self._count(copy, reply)

    def _call(self, copy: ShadowCopy) -> tuple[BentoReply | None, int, str | None]:
        url = self.catalog.url(copy.bento)
        if url is None:
            return None, FAILED_STATUS, f"shadow bento '{copy.bento}' is not in the catalog"
        try:
            return self.forwarder.predict(url, copy.live.inputs, copy.live.request_id), 200, None
        except BentoRejected as exc:
            return None, exc.bento_status, exc.message
        except BentoCallFailed as exc:
            return None, exc.status or FAILED_STATUS, str(exc)

    def _count(self, copy: ShadowCopy, reply: BentoReply | None) -> None:
        flag = copy.live.flag
        self.metrics.shadow_requests.labels(flag, copy.bento, "ok" if reply else "failed").inc()
        self.metrics.shadow_queue_depth.set(self._queue.qsize())
        if reply is not None and copy.live_body is not None:
            agree = decisions(reply.body) == decisions(copy.live_body)
            self.metrics.shadow_agreement.labels(flag, copy.bento, str(agree).lower()).inc()


def score(body: dict[str, Any]) -> float | None:
    """The first numeric field of the first prediction, logged for drift and calibration."""
    predictions = body.get("predictions")
    if isinstance(predictions, list) and predictions and isinstance(predictions[0], dict):
        for value in predictions[0].values():
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    return None


def decisions(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-numeric fields of each prediction (e.g. `offer`): what a caller acts on.

    Scores of two model versions always differ a little; agreement is about the decisions.
    """
    predictions = body.get("predictions")
    if not isinstance(predictions, list):
        return []
    return [
        {k: v for k, v in p.items() if isinstance(v, bool | str)}
        for p in predictions
        if isinstance(p, dict)
    ]
