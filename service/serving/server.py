"""`rollout serve`: the selector under a pre-forking server, several workers, graceful shutdown.

Two servers, the same guarantees (each module says how it keeps them):

- `granian` (the default, `granian_server`): a Rust HTTP server; each worker process runs the
  WSGI app on a few Python threads. One extra hop costs less on it (see the README's
  benchmarks).
- `gunicorn` (`gunicorn_server`): gthread workers.

Whichever serves: the Unleash client, the bento pool and the event writer are built inside each
worker, after the fork, by calling the app factory there; the master process imports no part of
the app and starts no thread of ours before it forks (a thread running while a process forks can
hold a lock the child then waits on for ever). A SIGTERM lets in-flight requests finish, then
each worker closes its selector, which writes every buffered event. The first worker whose app
is loaded prints the ready line. Metrics: each worker writes its samples to files in
PROMETHEUS_MULTIPROC_DIR (a fresh folder per server run unless the variable is already set), so
/metrics on any worker reports all of them.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from typing import Any, Protocol

from service.config import Settings
from service.errors import RolloutError
from service.flags.definitions import load_flags
from service.serving import granian_server, gunicorn_server
from service.serving.catalog import BentoCatalog
from service.serving.flag_client import check_settings
from service.serving.prefork import DEFAULT_SERVER, MULTIPROC_ENV


class Runner(Protocol):
    def __call__(
        self,
        bind: tuple[str, int],
        workers: int,
        threads: int,
        app_config: dict[str, Any] | None,
        on_ready: Callable[[], None] | None,
    ) -> None: ...


SERVERS: dict[str, Runner] = {"granian": granian_server.run, "gunicorn": gunicorn_server.run}


class CannotListen(RolloutError):
    """The address to serve on is taken (or not ours to bind)."""


def preflight(settings: Settings) -> str:
    """Check what every worker would otherwise fail on, in the master; describe what serves.

    Raises the package's own errors (a broken flag file, a bad catalog) before any worker
    starts, so a mistake is one message instead of a traceback per worker.
    """
    check_settings(settings)
    if settings.unleash_url:
        flags = f"flags from Unleash at {settings.unleash_url} ({settings.environment})"
    else:
        count = len(load_flags(settings.flags_dir).flags)
        flags = f"embedded flags ({count} from {settings.flags_dir})"
    bentos = BentoCatalog.parse(settings.bento_urls) if settings.bento_urls else None
    catalog = bentos or BentoCatalog.load(settings.catalog_file)
    return f"{flags}, {len(catalog.endpoints)} bento(s) in the catalog"


def check_listen(host: str, port: int) -> None:
    """One clear error when the address is taken, before any server starts and retries on it."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def serve(
    host: str,
    port: int,
    workers: int,
    threads: int,
    server: str = DEFAULT_SERVER,
    app_config: dict[str, Any] | None = None,
    announce: Callable[[str], Any] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT; `announce` gets one line once the selector answers."""
    run = SERVERS[server]
    check_listen(host, port)
    own_metrics_dir = not os.environ.get(MULTIPROC_ENV)
    if own_metrics_dir:  # set before the fork, so every worker's prometheus_client sees it
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="rollout-metrics-")
    master = os.getpid()
    url = f"http://{host}:{port}"
    on_ready = None
    if announce is not None:
        on_ready = ReadyLine(announce, f"selector ready on {url} (readiness: {url}/readyz)")
    try:
        run((host, port), workers, threads, app_config, on_ready)
    finally:
        # A worker may leave through this frame too (its SystemExit unwinds the stack it
        # inherited from the fork); only the master may remove the folder the others still use.
        if own_metrics_dir and os.getpid() == master:
            shutil.rmtree(os.environ.pop(MULTIPROC_ENV), ignore_errors=True)


class ReadyLine:
    """Says the ready line; a plain callable so that it survives a spawned worker's pickling."""

    def __init__(self, announce: Callable[[str], Any], line: str) -> None:
        self.announce, self.line = announce, line

    def __call__(self) -> None:
        self.announce(self.line)
