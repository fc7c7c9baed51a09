"""`rollout serve`: the selector under gunicorn, several workers, graceful shutdown.

The Unleash client, the bento pool and the event writer are built inside each worker after
the fork (the Python SDK's scheduler threads do not survive a fork), by calling the app
factory in `load()`. On SIGTERM gunicorn lets in-flight requests finish, then `worker_exit`
closes the selector, which writes every buffered event.

Metrics: each worker writes its samples to files in PROMETHEUS_MULTIPROC_DIR (a fresh folder per
server run unless the variable is already set), so /metrics on any worker reports all of them.
"""

from __future__ import annotations

# The announce thread below calls urlopen in the master while gunicorn forks the workers. urlopen
# imports `encodings.idna` lazily on its first call; a fork in the middle of that import hands the
# worker a module lock nobody will release, and the worker hangs for ever in its own first
# `import requests` (seen: `rollout serve` never ready, the worker stuck in _ModuleLock.acquire).
# Imported here, in the master, before any thread starts, so no thread imports during a fork.
import encodings.idna  # noqa: F401
import http.client  # noqa: F401
import os
import shutil
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

from service.config import Settings
from service.flags.definitions import load_flags
from service.serving.catalog import BentoCatalog

# Not imported from service.serving.metrics: importing prometheus_client in the master before this
# variable is set would fix its single-process mode into every forked worker.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class SelectorServer(BaseApplication):
    def __init__(self, options: dict[str, Any], app_config: dict[str, Any] | None = None):
        self.options = options
        self.app_config = app_config
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        self.cfg.set("worker_exit", _close_selector)
        self.cfg.set("child_exit", _forget_worker_metrics)

    def load(self) -> Any:
        # Imported here, in the worker, on purpose: the app imports prometheus_client, which fixes
        # its single- or multi-process mode at import from PROMETHEUS_MULTIPROC_DIR; `serve` sets
        # that variable, so the master must not import the app before it does.
        from service.serving.app import create_app

        return create_app(self.app_config)


def _close_selector(_server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    selector = getattr(app, "extensions", {}).get("selector") if app else None
    if selector is not None:
        selector.close()


def _forget_worker_metrics(_server: Any, worker: Any) -> None:
    """A dead worker's gauges (queue depths) must not count in the live sum any more."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def preflight(settings: Settings) -> str:
    """Check what every worker would otherwise fail on, in the master; describe what serves.

    Raises the package's own errors (a broken flag file, a bad catalog) before any worker
    starts, so a mistake is one message instead of a traceback per worker.
    """
    if settings.unleash_url:
        flags = f"flags from Unleash at {settings.unleash_url} ({settings.environment})"
    else:
        count = len(load_flags(settings.flags_dir).flags)
        flags = f"embedded flags ({count} from {settings.flags_dir})"
    bentos = BentoCatalog.parse(settings.bento_urls) if settings.bento_urls else None
    catalog = bentos or BentoCatalog.load(settings.catalog_file)
    return f"{flags}, {len(catalog.endpoints)} bento(s) in the catalog"


def serve(
    host: str,
    port: int,
    workers: int,
    threads: int,
    app_config: dict[str, Any] | None = None,
    announce: Callable[[str], Any] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT; `announce` gets one line once the selector answers."""
    own_metrics_dir = not os.environ.get(MULTIPROC_ENV)
    if own_metrics_dir:  # set before the fork, so every worker's prometheus_client sees it
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="rollout-metrics-")
    master = os.getpid()
    try:
        _run(host, port, workers, threads, app_config, announce)
    finally:
        # A worker leaves through this frame too (its SystemExit unwinds the stack it inherited
        # from the fork); only the master may remove the folder the other workers still use.
        if own_metrics_dir and os.getpid() == master:
            shutil.rmtree(os.environ.pop(MULTIPROC_ENV), ignore_errors=True)


def _run(
    host: str,
    port: int,
    workers: int,
    threads: int,
    app_config: dict[str, Any] | None,
    announce: Callable[[str], Any] | None,
) -> None:
    server = SelectorServer(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "graceful_timeout": 30,
            "timeout": 60,
            "accesslog": None,
            "loglevel": "warning",
            "preload_app": False,
        },
        app_config,
    )
    if announce is not None:
        url = f"http://{host}:{port}"
        server.cfg.set("when_ready", lambda _arbiter: _announce_when_live(url, announce))
    server.run()


def _announce_when_live(url: str, announce: Callable[[str], Any], timeout: float = 120.0) -> None:
    """From the master, once a worker answers /healthz: the one line a person waits for."""

    def wait() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                    announce(f"selector ready on {url} (readiness: {url}/readyz)")
                    return
            except OSError:
                time.sleep(0.2)  # poll interval while the workers load the app
        announce(f"selector at {url} did not answer /healthz within {timeout:.0f}s")

    threading.Thread(target=wait, name="announce-ready", daemon=True).start()
