"""`rollout up`: everything a newcomer needs to try the selector, running until Ctrl-C.

Builds the bentos if needed, serves each with `bentoml serve`, writes the catalog the selector
reads, starts the selector on embedded flags (flags/) and the console, and hands back the URLs
and a ready-to-paste `curl` for a prediction. Then it watches: a child that dies stops the
whole thing with its log tail; SIGINT or SIGTERM stops everything it started, the selector
first (gracefully, so every buffered event is written), then the console, then the bentos.
"""

from __future__ import annotations

import json
import shlex
import socket
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from service.config import Settings
from service.errors import ConfigError
from service.flags.definitions import load_flags
from service.harness.demo import selector_env, serve_bentos
from service.processes import (
    ManagedProcess,
    ProcessFailed,
    selector_process,
    venv_executable,
)
from service.registry.build import build_all
from service.registry.population import population

HOST = "127.0.0.1"
WATCH_SECONDS = 1.0  # how often a child's liveness is checked while running


@dataclass(frozen=True)
class Running:
    """What `up` started, for the person at the terminal."""

    selector_url: str
    console_url: str
    bentos: dict[str, str]  # tag -> URL
    flag: str
    curl: str
    logs: str
    pids: list[int] = field(default_factory=list)


def check_port_free(port: int, what: str) -> None:
    """A clear error now instead of a child failing to bind later."""
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise ConfigError(
                f"port {port} for the {what} is in use ({exc.strerror}); pick another with "
                f"--{'console-' if what == 'console' else ''}port"
            ) from exc


def curl_for(selector_url: str, flag: str) -> str:
    """A prediction for one synthetic user, as a shell command a person can paste."""
    user = population(1)[0]
    body = {
        "context": {
            "userId": user.user_id,
            "properties": {"region": user.region, "segment": user.segment},
        },
        "inputs": [user.features()],
    }
    url = f"{selector_url}/v1/models/{flag}/predict"
    return f"curl -s {url} -H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}"


def console_process(port: int, selector_url: str, settings: Settings) -> ManagedProcess:
    """`rollout console` reading the same flags/ and data folder, ready at /healthz."""
    command = [
        venv_executable("rollout"),
        "console",
        "--port",
        str(port),
        "--selector-url",
        selector_url,
    ]
    env = {"UNLEASH_URL": "", "ROLLOUT_UNLEASH_URL": "", **_settings_env(settings)}
    log = settings.data_dir / "logs" / "console.log"
    return ManagedProcess("console", command, f"http://{HOST}:{port}/healthz", log, env)


def _settings_env(settings: Settings) -> dict[str, str]:
    env = {
        "ROLLOUT_DATA_DIR": str(settings.data_dir),
        "ROLLOUT_FLAGS_DIR": str(settings.flags_dir),
        "ROLLOUT_REPORTS_DIR": str(settings.reports_dir),
        "ROLLOUT_BENTOS_DIR": str(settings.bentos_dir),
        "ROLLOUT_ENVIRONMENT": settings.environment,
    }
    if settings.database_url:
        env["ROLLOUT_DATABASE_URL"] = settings.database_url
    return env


def run_up(
    settings: Settings,
    *,
    port: int,
    console_port: int,
    stop: threading.Event,
    on_ready: Callable[[Running], Any],
    progress: Callable[[str], Any],
) -> None:
    """Start everything, call `on_ready`, and block until `stop` is set (or a child dies)."""
    check_port_free(port, "selector")
    check_port_free(console_port, "console")
    flags = load_flags(settings.flags_dir)  # a broken flag file: one message, nothing started
    progress("building the bentos (skipped when nothing changed)")
    tags = [built.tag for built in build_all(settings, progress)]
    with ExitStack() as stack:
        progress(f"serving {', '.join(tags)} with bentoml serve")
        bentos, catalog = serve_bentos(stack, tags, settings)
        selector_url = f"http://{HOST}:{port}"
        progress("starting the selector (embedded flags from flags/) and the console")
        # A local try-out: predictions are open (the printed curl carries no key); outcomes
        # still need a key once any exists, as everywhere.
        env = {
            **selector_env(settings, catalog),
            **_settings_env(settings),
            "ROLLOUT_REQUIRE_KEYS": "",
        }
        selector = selector_process(port, settings.data_dir / "logs" / "selector.log", env)
        console = console_process(console_port, selector_url, settings)
        # Entered in this order, so the ExitStack stops the selector before the bentos.
        stack.enter_context(console)
        stack.enter_context(selector)
        selector.wait_ready(timeout=90)
        console.wait_ready(timeout=60)
        children: list[ManagedProcess] = [*bentos.values(), selector, console]
        flag = sorted(flags.flags)[0]
        on_ready(
            Running(
                selector_url,
                f"http://{HOST}:{console_port}",
                catalog.endpoints,
                flag,
                curl_for(selector_url, flag),
                str(settings.data_dir / "logs"),
                [c.process.pid for c in children if c.process],
            )
        )
        _watch(children, stop)
        progress("stopping the selector (writing its events), the console and the bentos")


def _watch(children: list[ManagedProcess], stop: threading.Event) -> None:
    while not stop.wait(WATCH_SECONDS):
        for child in children:
            if child.process is not None and child.process.poll() is not None:
                raise ProcessFailed(
                    f"{child.name} exited (code {child.process.returncode}); everything else "
                    f"is being stopped. Its log {child.log_file}:\n{child.log_tail(15)}"
                )
