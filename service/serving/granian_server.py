"""`rollout serve --server granian`: the selector on granian (Rust HTTP, WSGI worker processes).

How it keeps the guarantees of `server.py`:

- Per-worker clients: granian's master forks (or spawns) one process per worker and calls our
  target loader there, after the fork; the loader builds the app. The master only binds the
  socket and waits; it imports no part of the app.
- Graceful stop: on SIGTERM (sent to the whole group, or by the master to each worker) a worker
  stops accepting, lets every in-flight request and connection finish, and only then returns
  from its serve call; `_worker` then closes the selector, which writes every buffered event.
  Explicitly: a forked multiprocessing child ends with os._exit, so `atexit` would not run.
  The master waits `GRACEFUL_SECONDS` for that before it kills a worker.
- Ready line: the first worker whose app is loaded says it (a flag shared through the fork).
- Metrics: a worker that ends removes its live gauges' files itself, and a new worker removes
  those of workers that died without a goodbye (gunicorn's master does this in `child_exit`).
- Python threads per worker: `threads` (granian's blocking threads), as gunicorn's gthreads.
- Limits: HTTP/1.1 only; a head over about HEAD_BYTES or with over 100 headers is a 431 before
  the app sees it; bodies are streamed to the app, which refuses one over its limit (413).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import MPServer

from service.serving.prefork import (
    GRACEFUL_SECONDS,
    close_app,
    forget_dead_workers,
    forget_worker,
    load_app,
)

# A request's head (request line and headers) past about this many bytes is refused with a 431,
# and so are more than 100 headers (hyper's limit); granian's default buffer is 408 KiB.
HEAD_BYTES = 64 * 1024

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# This worker's app, once its loader built it (one per process; the master never sets it).
_loaded: list[Any] = []


def run(
    bind: tuple[str, int],
    workers: int,
    threads: int,
    app_config: dict[str, Any] | None,
    on_ready: Callable[[], None] | None,
) -> None:
    server = MPServer(
        "service.serving.app:create_app",  # named for granian's logs; `_load` builds the app
        address=bind[0],
        port=bind[1],
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=threads,
        http=HTTPModes.http1,  # as gunicorn: callers and balancers speak HTTP/1.1 to the selector
        http1_settings=HTTP1Settings(max_buffer_size=HEAD_BYTES),
        log_level=LogLevels.warning,
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=GRACEFUL_SECONDS,
    )
    first = FirstWorker(on_ready) if on_ready is not None else None
    server.serve(spawn_target=_worker, target_loader=partial(_load, app_config, first))


def _load(app_config: dict[str, Any] | None, first: FirstWorker | None, _target: str) -> Any:
    """In the worker, after the fork: its own app (Unleash client, bento pool, event writer)."""
    forget_dead_workers()
    app = load_app(app_config)
    _loaded.append(app)
    if first is not None:
        first()
    return whole_bodies(app)


def whole_bodies(app: WSGIApp) -> WSGIApp:
    """The app, with every response that states its length handed to granian as one chunk.

    granian sends a list body from Rust in one call; any other iterable (what Flask returns) it
    pulls chunk by chunk, back and forth across the GIL: 0.3 ms of a worker's CPU per predict in
    the profile (scripts/benchmarks/profile_selector.py). A body with a Content-Length is finite
    and already built, so joining it costs nothing; one without (a stream) passes through as is.
    """

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sized = False

        def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            nonlocal sized
            sized = any(name.lower() == "content-length" for name, _ in headers)
            return start_response(status, headers, *exc_info)

        body = app(environ, start)
        if not sized or isinstance(body, list):
            return body
        try:
            return [b"".join(body)]
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    return wsgi


def _worker(*args: Any) -> None:
    """granian's WSGI worker, then the selector's close once the worker has drained."""
    try:
        MPServer._spawn_wsgi_worker(*args)
    finally:
        for app in _loaded:
            close_app(app)
        forget_worker(os.getpid())


class FirstWorker:
    """Calls `on_ready` in the first worker whose app is loaded, never again (respawns too)."""

    def __init__(self, on_ready: Callable[[], None]) -> None:
        self.on_ready = on_ready
        self.said = multiprocessing.Value("b", 0)  # shared memory, created before the fork

    def __call__(self) -> None:
        with self.said.get_lock():
            if self.said.value:
                return
            self.said.value = 1
        self.on_ready()
