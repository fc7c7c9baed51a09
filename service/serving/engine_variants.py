"""A flag's variant straight from the SDK's own Yggdrasil engine, without the SDK's wrapping.

Why: on the request path `UnleashClient.get_variant` is one engine call wrapped in a lot of
general-purpose Python: the context serialised with the stdlib `json`, the engine's answer
parsed into a generic `Response`, a second engine call (`should_emit_impression_event`)
parsed the same way, then `dataclasses.asdict`, which deep-copies the variant. Hot, that is
42 us a call; but a selector worker at concurrency 1 meets each request with cold caches (it
has been waiting on the bento for milliseconds, while the bento's model ran), and cold it took
300-360 us, a third of everything the selector adds to a request
(scripts/benchmarks/engine_variants.py measures both, side by side).

`EngineVariants` makes the same call on the same engine and state: the context enriched
exactly as the SDK enriches it (`engine_context`), the engine's `check_variant`, and the same
two counts the SDK records for Unleash's usage metrics (`count_toggle`, `count_variant`),
handed to the engine by a thread of its own once a second rather than on the request (two
more calls into the engine, 50 us each when cold): the SDK sends them to Unleash once a
minute, and `close` hands over what is left before the SDK sends its last. What it leaves
out, it leaves out only when the SDK would do nothing with it either:

- impression events: the SDK emits them only to an event callback, and the selector registers
  none (`attach` checks);
- custom strategies: a flag with a strategy that only a registered Python implementation can
  evaluate goes through the SDK's own path.

It reaches into the SDK (`_evaluator`, `_engine`) and the engine's C interface, pinned by
UnleashClient==6.9.1 (yggdrasil-engine 2.x). `attach` returns None when any of it is not as
expected, and a call that fails in any way is answered by the SDK's public path instead, so an
upgrade can make the selector slower, never wrong. tests/unit/test_engine_variants.py holds
the two paths to the same answers and metrics; the Unleash client-specification suite
(tests/integration/test_conformance.py) runs through this one.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any

import orjson

log = logging.getLogger(__name__)

# The SDK's own list (UnleashClient._context.BASE_CONTEXT_FIELDS): any other top-level field
# is also a property.
BASE_FIELDS = frozenset(
    ("userId", "sessionId", "environment", "appName", "currentTime", "remoteAddress", "properties")
)
COUNT_INTERVAL = 1.0  # seconds between hand-overs of the usage counts to the engine
# Beyond this many queued counts a request hands them over itself, so a counting thread that
# is not running (a process forked after the client was made) neither grows memory nor loses
# counts. A worker evaluates far fewer a second.
MAX_QUEUED_COUNTS = 10_000
_DISABLED: dict[str, Any] = {"name": "disabled", "enabled": False, "feature_enabled": False}


def _text(value: Any) -> str:
    """A context value as the SDK sends it: str(), datetimes in ISO format."""
    if type(value) is str:
        return value
    return value.isoformat() if isinstance(value, datetime) else str(value)


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def utc_now_text(now: float | None = None) -> str:
    """The time as `datetime.now(timezone.utc).isoformat()` writes it, microseconds always
    given. The date and time of day are formatted once a second: cold, `datetime.now` and
    `isoformat` took 53 us of a request (scripts/benchmarks/engine_variants.py)."""
    global _second
    now = time.time() if now is None else now
    second = int(now)
    cached = _second  # one read: another thread may replace it meanwhile, never half of it
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int((now - second) * 1_000_000):06d}+00:00"


def engine_context(static: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """The context the SDK's `_ContextEnricher.build` hands the engine, built the same way:
    the static context under the caller's, a current time when none is given, every value a
    string, and every top-level field that is not a standard one copied into the properties."""
    merged = {**static, **context}
    if "currentTime" not in merged:
        merged["currentTime"] = utc_now_text()
    properties = {k: v for k, v in merged.items() if k not in BASE_FIELDS}
    properties.update(merged.get("properties") or {})
    out: dict[str, Any] = {k: _text(v) for k, v in merged.items() if k != "properties"}
    out["properties"] = {k: _text(v) for k, v in properties.items()}
    return out


class EngineVariants:
    """`get_variant` on the engine of one UnleashClient, as `UnleashClient.get_variant` answers."""

    def __init__(self, client: Any, config: Any, engine: Any) -> None:
        self._client = client
        self._config = config
        self._engine = engine
        self._lib = engine.lib
        self._custom = engine.custom_strategy_handler
        # (flag, feature enabled, variant) per evaluation; appending to a deque is atomic.
        self._counts: deque[tuple[bytes, bool, bytes]] = deque()
        self._closed = threading.Event()
        self._counter = threading.Thread(
            target=self._count_loop, name="unleash-counts", daemon=True
        )
        self._counter.start()

    @classmethod
    def attach(cls, client: Any) -> EngineVariants | None:
        """The shortcut for `client`, or None when the SDK is not the one this was written for
        (then the caller keeps calling the SDK)."""
        evaluator = getattr(client, "_evaluator", None)
        engine = getattr(evaluator, "_engine", None)
        config = getattr(evaluator, "_config", None)
        lib = getattr(engine, "lib", None)
        needed = ("check_variant", "free_response", "count_toggle", "count_variant")
        if (
            engine is None
            or config is None
            or not all(hasattr(lib, name) for name in needed)
            or not hasattr(engine, "custom_strategy_handler")
            or not hasattr(config, "static_context")
            or getattr(evaluator, "_events", None) is not None  # impression events wanted
        ):
            log.info("UnleashClient internals differ; evaluating flags through the SDK")
            return None
        return cls(client, config, engine)

    def get_variant(self, flag: str, context: dict[str, Any]) -> dict[str, Any]:
        """The dict `UnleashClient.get_variant` returns, counted in the same usage metrics."""
        try:
            variant = self._evaluate(flag, context)
        except Exception:  # never fail a request over the shortcut: the SDK answers instead
            log.debug("engine shortcut failed for %s; asking the SDK", flag, exc_info=True)
            variant = None
        if variant is None:  # a failure, or a flag with custom strategies
            result: dict[str, Any] = self._client.get_variant(flag, context)
            return result
        return variant

    def _evaluate(self, flag: str, context: dict[str, Any]) -> dict[str, Any] | None:
        """The engine's answer; None for a flag with custom strategies (the SDK's to answer)."""
        if self._custom.strategy_definitions.get(flag):
            return None
        engine_ctx = engine_context(self._config.static_context, context)
        name = flag.encode()
        engine, lib = self._engine, self._lib
        pointer = lib.check_variant(engine.state, name, orjson.dumps(engine_ctx), b"{}")
        try:
            answer = orjson.loads(ctypes.string_at(pointer))
        finally:
            lib.free_response(pointer)
        if answer.get("status_code") == "Error":
            raise RuntimeError(answer.get("error_message") or "engine error")
        raw = answer.get("value")
        variant = dict(_DISABLED) if raw is None else _variant(raw)  # the caller may keep it
        self._counts.append((name, variant["feature_enabled"], variant["name"].encode()))
        if len(self._counts) > MAX_QUEUED_COUNTS:  # the thread is stalled or gone (a fork)
            self.count()
        return variant

    def count(self) -> int:
        """Hand the queued usage counts to the engine (what UnleashClient's get_variant records
        with each call: yggdrasil's count_toggle and count_variant, which the SDK's metrics job
        reads and sends to Unleash). Returns how many evaluations were counted."""
        engine, lib = self._engine, self._lib
        counted = 0
        while True:
            try:
                name, enabled, variant = self._counts.popleft()
            except IndexError:
                return counted
            lib.free_response(lib.count_toggle(engine.state, name, enabled))
            lib.free_response(lib.count_variant(engine.state, name, variant))
            counted += 1

    def close(self) -> None:
        """Stop the counting thread and hand over the last counts (before the SDK's last send)."""
        self._closed.set()
        self._counter.join(timeout=5)
        self.count()

    def _count_loop(self) -> None:
        while not self._closed.wait(COUNT_INTERVAL):
            try:
                self.count()
            except Exception:  # a count lost is a metric off by one, never a reason to stop
                log.exception("could not hand usage counts to the Unleash engine")


def _variant(raw: dict[str, Any]) -> dict[str, Any]:
    """The engine's variant as the SDK's dict: its fields, `None`s left out."""
    variant = {
        "name": raw.get("name", ""),
        "payload": raw.get("payload"),
        "enabled": raw.get("enabled", False),
        "feature_enabled": raw.get("featureEnabled", False),
    }
    return {k: v for k, v in variant.items() if v is not None}
