"""`rollout serve --server gunicorn`: the selector on gunicorn's gthread workers.

The app factory runs in `load()`, in each worker after the fork (the Unleash SDK's scheduler
threads do not survive a fork). On SIGTERM gunicorn lets in-flight requests finish, then
`worker_exit` closes the selector, which writes every buffered event; `child_exit` (in the
master) forgets a dead worker's live gauges.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

from service.serving.prefork import GRACEFUL_SECONDS, close_app, forget_worker, load_app


class SelectorServer(BaseApplication):
    def __init__(self, options: dict[str, Any], app_config: dict[str, Any] | None = None):
        self.options = options
        self.app_config = app_config
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        self.cfg.set(
            "worker_exit", lambda _server, worker: close_app(getattr(worker, "wsgi", None))
        )
        self.cfg.set("child_exit", lambda _server, worker: forget_worker(worker.pid))

    def load(self) -> Any:
        return load_app(self.app_config)


def run(
    bind: tuple[str, int],
    workers: int,
    threads: int,
    app_config: dict[str, Any] | None,
    on_ready: Callable[[], None] | None,
) -> None:
    server = SelectorServer(
        {
            "bind": f"{bind[0]}:{bind[1]}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "graceful_timeout": GRACEFUL_SECONDS,
            "timeout": 60,
            "accesslog": None,
            "loglevel": "warning",
            "preload_app": False,
        },
        app_config,
    )
    if on_ready is not None:
        server.cfg.set("post_worker_init", _first_worker(on_ready))
    server.run()


def _first_worker(on_ready: Callable[[], None]) -> Callable[[Any], None]:
    """A hook run in each worker once its app is loaded: the first one says the ready line.

    Said from the worker, not from a thread in the master: a thread running while gunicorn
    forks can hold an import lock the child then waits on for ever (seen: a worker stuck
    importing `encodings.idna`, and a shutdown that outlasted the graceful timeout).
    """

    def hook(worker: Any) -> None:
        if getattr(worker, "age", 0) == 1:  # the first worker this server spawned
            on_ready()

    return hook
