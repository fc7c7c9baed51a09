"""`rollout serve`: the selector under gunicorn, several workers, graceful shutdown.

The Unleash client, the bento pool and the event writer are built inside each worker after
the fork (the Python SDK's scheduler threads do not survive a fork), by calling the app
factory in `load()`. On SIGTERM gunicorn lets in-flight requests finish, then `worker_exit`
closes the selector, which writes every buffered event.
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication


class SelectorServer(BaseApplication):
    def __init__(self, options: dict[str, Any], app_config: dict[str, Any] | None = None):
        self.options = options
        self.app_config = app_config
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        self.cfg.set("worker_exit", _close_selector)

    def load(self) -> Any:
        from service.app import create_app

        return create_app(self.app_config)


def _close_selector(_server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    selector = getattr(app, "extensions", {}).get("selector") if app else None
    if selector is not None:
        selector.close()


def serve(
    host: str, port: int, workers: int, threads: int, app_config: dict[str, Any] | None = None
) -> None:
    """Run until SIGTERM/SIGINT."""
    SelectorServer(
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
    ).run()
