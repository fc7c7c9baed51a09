"""`rollout console`: the console under gunicorn, one worker with a few threads.

One worker on purpose: the Live page's recent scrapes and (unless ROLLOUT_CONSOLE_SECRET_KEY is
set) the key signing sessions live in that process's memory. The app is built in the worker,
after the fork, so the sampler thread runs where the requests are served.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

from service.console.app import create_app


class ConsoleServer(BaseApplication):
    def __init__(self, options: dict[str, Any], app_config: dict[str, Any] | None = None):
        self.options, self.app_config = options, app_config
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return create_app(self.app_config)


def serve(
    host: str,
    port: int,
    app_config: dict[str, Any] | None = None,
    announce: Callable[[str], Any] | None = None,
    threads: int = 4,
) -> None:
    """Run until SIGTERM/SIGINT; `announce` gets one line once the server listens."""
    server = ConsoleServer(
        {
            "bind": f"{host}:{port}",
            "workers": 1,
            "threads": threads,
            "worker_class": "gthread",
            "graceful_timeout": 10,
            "accesslog": None,
            "loglevel": "warning",
        },
        app_config,
    )
    if announce is not None:
        url = f"http://{host}:{port}"
        server.cfg.set("when_ready", lambda _arbiter: announce(f"console ready on {url}"))
    server.run()
