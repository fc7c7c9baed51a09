"""Forwarding a prediction request to a bento over pooled HTTP connections.

Failures are sorted into two kinds, because the selector treats them differently: the bento
refusing the inputs (4xx, the caller's mistake, passed back as 422) and the bento failing
(5xx, timeout, refused connection: served by the flag's default bento instead).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import orjson
import urllib3

from service.errors import InputRejected
from service.serving.bento_http import BentoConnectionError, BentoPool, Reply, StaleConnection


class BentoCallFailed(Exception):
    """The bento could not answer (down, timed out, 5xx, unreadable reply)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the bento's HTTP status; None when it never answered


class BentoRejected(InputRejected):
    """The bento answered 4xx to the inputs; `status` is its own status, logged for shadows."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.bento_status = status


@dataclass(frozen=True)
class BentoReply:
    body: dict[str, Any]
    latency_ms: float
    raw: bytes | None = None  # the bento's JSON as it came: forwarded without re-encoding

    def json_bytes(self) -> bytes:
        return self.raw if self.raw is not None else orjson.dumps(self.body)


def encode(value: Any) -> bytes:
    """JSON bytes; orjson (a few us a request), json for what it refuses (e.g. NaN)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value).encode()


def decode(data: bytes) -> Any:
    """Parsed JSON; orjson first, json (which also reads NaN) for anything orjson refuses."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


class BentoForwarder:
    """One connection pool per bento and process, shared by all request threads."""

    def __init__(self, timeout: float = 2.0, pool_size: int = 64) -> None:
        self._timeouts = (min(timeout, 1.0), timeout)  # connect, read
        self._pool_size = pool_size
        # For readiness checks and any bento URL that is not plain http (e.g. https).
        self._pool = urllib3.PoolManager(
            num_pools=32,
            maxsize=pool_size,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=self._timeouts[0], read=timeout),
        )
        # base URL -> its keep-alive pool (service.serving.bento_http: a fraction of urllib3's
        # CPU per call), built on first use.
        self._bentos: dict[str, BentoPool] = {}

    def predict(self, base_url: str, inputs: Any, request_id: str) -> BentoReply:
        """POST {"inputs": ...} to the bento's /predict and return its JSON reply."""
        started = time.perf_counter()
        body = encode({"inputs": inputs})
        headers = {"Content-Type": "application/json", "X-Request-ID": request_id}
        try:
            try:
                response = self._post(base_url, body, headers)
            except (StaleConnection, urllib3.exceptions.ProtocolError):
                # The bento closed an idle keep-alive connection just as the pool reused it:
                # nothing came back, so one resend on a fresh connection is safe.
                response = self._post(base_url, body, headers)
        except (BentoConnectionError, urllib3.exceptions.HTTPError) as exc:
            raise BentoCallFailed(f"{base_url}: {type(exc).__name__}: {exc}") from exc
        latency_ms = (time.perf_counter() - started) * 1000
        if 400 <= response.status < 500:
            raise BentoRejected(
                f"the model rejected the inputs: {_message(response.data)}", response.status
            )
        if response.status != 200:
            raise BentoCallFailed(
                f"{base_url} answered {response.status}: {_message(response.data)}",
                response.status,
            )
        try:
            return BentoReply(decode(response.data), latency_ms, response.data)
        except ValueError as exc:
            raise BentoCallFailed(f"{base_url} answered with invalid JSON", 200) from exc

    def _post(self, base_url: str, body: bytes, headers: dict[str, str]) -> Reply:
        bento = self._bentos.get(base_url)
        if bento is None and base_url.startswith("http://"):
            # Two threads may both build one the first time; either pool serves.
            pool = BentoPool(base_url, self._pool_size, *self._timeouts)
            bento = self._bentos.setdefault(base_url, pool)
        if bento is not None:
            return bento.post("/predict", body, headers)
        response = self._pool.request("POST", f"{base_url}/predict", body=body, headers=headers)
        return Reply(response.status, response.data)

    def answers(self, base_url: str, timeout: float = 1.0) -> bool:
        """Whether the bento answers its own readiness check (GET /readyz) with a 200."""
        try:
            response = self._pool.request(
                "GET", f"{base_url}/readyz", timeout=urllib3.Timeout(total=timeout)
            )
        except urllib3.exceptions.HTTPError:
            return False
        return response.status == 200

    def close(self) -> None:
        self._pool.clear()
        for pool in list(self._bentos.values()):
            pool.close()


def _message(data: bytes) -> str:
    """The error text of a bento's reply, without the noise around it."""
    text = data.decode("utf-8", "replace")[:2000]
    try:
        parsed = json.loads(text)
    except ValueError:
        return text.strip() or "(empty reply)"
    if isinstance(parsed, dict) and isinstance(parsed.get("detail"), list):
        # BentoML's validation errors: name each field as the caller wrote it.
        return "; ".join(_field_error(item) for item in parsed["detail"])
    if isinstance(parsed, dict) and "error" in parsed:
        return str(parsed["error"])
    return text


def _field_error(item: Any) -> str:
    """{"loc": ["inputs", 0, "tenure_months"], "msg": "..."} -> "inputs[0].tenure_months: ..."."""
    if not isinstance(item, dict):
        return str(item)
    path = ""
    for part in item.get("loc", []):
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return f"{path}: {item.get('msg', 'invalid')}" if path else str(item.get("msg", item))
