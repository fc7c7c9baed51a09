"""What the selector's pre-forking servers (gunicorn, granian) share about worker processes."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

from service.processes import pid_alive

# Not imported from service.serving.metrics: importing prometheus_client in the master before this
# variable is set would fix its single-process mode into every forked worker.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The servers `rollout serve --server` offers (service.serving.server.SERVERS runs them), and
# the default, chosen by the benchmark in the README (one hop costs less on granian).
SERVER_NAMES = ("granian", "gunicorn")
DEFAULT_SERVER = "granian"
# Seconds a worker has, after SIGTERM, to finish its requests and write its events.
GRACEFUL_SECONDS = 30


# glibc's mallopt parameter for the most arenas a process may create (malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8
WORKER_ARENAS = 2


def limit_malloc_arenas(arenas: int = WORKER_ARENAS) -> bool:
    """Cap glibc's malloc arenas in this worker; True if applied.

    glibc gives a thread that finds the arenas busy an arena of its own, up to 8 per core, and
    memory freed in one arena is not reused by threads on another: a worker's request threads,
    its event writer and the server's own threads each fragment a heap, and RSS creeps with
    traffic although the Python heap stays flat (the memory soak of scripts/benchmarks). Two
    arenas keep the request threads from contending for one lock while the heaps stay few.
    MALLOC_ARENA_MAX in the environment, read by glibc at start, wins; without glibc (musl,
    macOS) this does nothing.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


def load_app(app_config: dict[str, Any] | None) -> Any:
    """The selector app, built in the worker that calls this (its clients are this process's).

    Imported here, in the worker, on purpose: the app imports prometheus_client, which fixes its
    single- or multi-process mode at import from PROMETHEUS_MULTIPROC_DIR; `serve` sets that
    variable, so the master must not import the app before it does.
    """
    from service.serving.app import create_app

    limit_malloc_arenas()
    return create_app(app_config)


def close_app(app: Any) -> None:
    """Write the worker's buffered events and close its clients (called once it has drained)."""
    selector = getattr(app, "extensions", {}).get("selector") if app is not None else None
    if selector is not None:
        selector.close()


def forget_worker(pid: int) -> None:
    """A dead worker's live gauges (queue depths) must not count in the live sum any more."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def forget_dead_workers() -> None:
    """Forget every worker whose gauge files remain but whose process is gone (e.g. killed)."""
    folder = os.environ.get(MULTIPROC_ENV)
    for path in Path(folder).glob("gauge_live*_*.db") if folder else ():
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            forget_worker(int(pid))
