"""The floors for one extra HTTP hop, on the selector's own server stack.

Two WSGI endpoints, nothing else (no routing, no JSON parsing, no logging, no metrics):

- `/predict` forwards the request body to the bento unchanged, through the selector's own
  bento client (`service.serving.bento_http.BentoPool`), and returns the bento's bytes: the
  least any proxy written for this stack adds. Floor minus direct is what one hop costs here;
  the selector minus this floor is what the selector's own work costs.
- `/echo` answers the request body itself: one HTTP round trip through the server and WSGI
  with no bento behind it, i.e. the hop on its own, with no second connection.
- `/stub/predict` (and `/stub/readyz`) answers like a churn bento with a fixed prediction, at
  a few thousand requests a second: the memory soak (`memory_soak.py`) sends 100,000 requests
  through a selector in a minute or two instead of the quarter hour a real model would take.

`selector.py` runs it on each server with the selector's settings (same worker and thread
counts), so the difference is the proxy's work and nothing about the server.

    BENTO_URL=http://127.0.0.1:3000 gunicorn --chdir scripts/benchmarks hop_floor:app
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from service.serving.bento_http import BentoPool

_POOL = BentoPool(os.environ.get("BENTO_URL", "http://127.0.0.1:3000").rstrip("/"), 64, 1.0, 10.0)
_HEADERS = {"Content-Type": "application/json"}
STUB_PREDICTION = b'{"predictions":[{"churn_probability":0.42,"offer":false}]}'


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO")
    if path in ("/healthz", "/stub/readyz"):  # readiness, for the benchmark's start-up
        return _answer(start_response, "200 OK", b"ok", "text/plain")
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    if path == "/echo":
        return _answer(start_response, "200 OK", body)
    if path == "/stub/predict":
        return _answer(start_response, "200 OK", STUB_PREDICTION)
    reply = _POOL.post("/predict", body, _HEADERS)
    return _answer(start_response, f"{reply.status} OK", reply.data)


def _answer(
    start_response: Callable[..., Any], status: str, body: bytes, kind: str = "application/json"
) -> list[bytes]:
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]
