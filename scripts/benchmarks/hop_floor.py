"""The floor for one extra HTTP hop: a minimal WSGI proxy on the selector's own server stack.

It forwards the request body to the bento unchanged and returns the bento's bytes, with
nothing else: no routing, no JSON parsing, no logging, no metrics. `selector.py` runs it under
gunicorn with the selector's settings (gthread workers, same worker and thread counts), so the
difference between it and the bento called directly is what one hop costs on this machine, and
the difference between the selector and it is what the selector's own work costs.

    BENTO_URL=http://127.0.0.1:3000 gunicorn --chdir scripts/benchmarks hop_floor:app
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import urllib3

_BENTO = os.environ.get("BENTO_URL", "http://127.0.0.1:3000").rstrip("/") + "/predict"
_POOL = urllib3.PoolManager(maxsize=64, retries=False, timeout=10.0)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/healthz":  # readiness, for the benchmark's start-up
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    reply = _POOL.request("POST", _BENTO, body=body, headers={"Content-Type": "application/json"})
    start_response(
        f"{reply.status} OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(reply.data)))],
    )
    return [reply.data]
