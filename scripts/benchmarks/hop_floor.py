"""The floors for one extra HTTP hop, on the selector's own server stack.

Two WSGI endpoints, nothing else (no routing, no JSON parsing, no logging, no metrics):

- `/predict` forwards the request body to the bento unchanged, through the selector's own
  bento client (`service.serving.bento_http.BentoPool`), and returns the bento's bytes: the
  least any proxy written for this stack adds. Floor minus direct is what one hop costs here;
  the selector minus this floor is what the selector's own work costs.
- `/decide` is that floor plus the one thing no selector can skip: it parses the selector's
  request body (`{"context": ..., "inputs": ...}`), decides the benchmark's flag for the
  context through the same Unleash engine as the selector (the SDK's `get_variant`, by the
  selector's engine shortcut), and forwards the re-encoded inputs. No input contract, no
  event, no metric, no reply envelope: decision floor minus direct is the least a per-request,
  Unleash-decided proxy adds on this stack. Needs `FLAGS_DIR` (the benchmark's flag folder).
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
from pathlib import Path
from typing import Any

import orjson

from service.config import Settings
from service.flags.definitions import load_flags
from service.serving.bento_http import BentoPool
from service.serving.flag_client import FlagClient, Variant

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
    if path == "/decide":
        request = orjson.loads(body)
        decide(request["context"])
        body = orjson.dumps({"inputs": request["inputs"]})
    reply = _POOL.post("/predict", body, _HEADERS)
    return _answer(start_response, f"{reply.status} OK", reply.data)


def _flag_client(flags_dir: Path) -> FlagClient:
    """This worker's flag client. Made when the module is imported, i.e. in each worker after
    the server forks, and before the first request (which would otherwise pay for it). Its
    data folder sits beside the flags, in the benchmark's own temporary folder, which the
    benchmark removes (a server's worker may end without running atexit)."""
    data = flags_dir.parent / f"floor-data-{os.getpid()}"
    settings = Settings.load({"data_dir": data, "unleash_url": None})
    flags = FlagClient(settings, load_flags(flags_dir))
    flags.start()
    return flags


_FLAGS = _flag_client(Path(os.environ["FLAGS_DIR"])) if os.environ.get("FLAGS_DIR") else None


def decide(context: dict[str, Any]) -> Variant:
    """The benchmark flag's variant for `context`, as the selector's routing asks for it
    (`FlagClient.variant`: the engine shortcut, or the SDK where it does not attach)."""
    if _FLAGS is None:
        raise RuntimeError("/decide needs FLAGS_DIR, the benchmark's flag folder")
    return _FLAGS.variant("bench", context)


def _answer(
    start_response: Callable[..., Any], status: str, body: bytes, kind: str = "application/json"
) -> list[bytes]:
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]
