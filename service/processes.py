"""Child processes the CLI and the tests start and stop: a server with a readiness URL.

Each runs in its own process group (servers such as bentoml and gunicorn fork workers), logs
to a file, is ready when its readiness URL answers 200 (polled, never a fixed sleep), and is
stopped with SIGTERM first so it can shut down gracefully, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import urllib3

from service.errors import RolloutError


class ProcessFailed(RolloutError):
    """A child server did not become ready; the message carries its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def venv_executable(name: str) -> str:
    """A console script installed beside this interpreter (e.g. bentoml, rollout)."""
    return str(Path(sys.executable).parent / name)


class ManagedProcess:
    """A server subprocess with a readiness check and a graceful stop."""

    def __init__(
        self,
        name: str,
        command: list[str],
        ready_url: str,
        log_file: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name, self.command, self.ready_url = name, command, ready_url
        self.log_file, self.env, self.cwd = log_file, env, cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> Self:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Block until the readiness URL answers 200; return the seconds since start()."""
        http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=2))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise ProcessFailed(
                    f"{self.name} exited early; log {self.log_file}:\n{self.log_tail()}"
                )
            try:
                if http.request("GET", self.ready_url).status == 200:
                    return time.monotonic() - self.started
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.1)  # poll interval of the readiness check, not a wait for readiness
        raise ProcessFailed(
            f"{self.name} not ready at {self.ready_url} after {timeout:.0f}s; "
            f"log {self.log_file}:\n{self.log_tail()}"
        )

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM the process group, wait up to `grace` seconds, then SIGKILL it."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(self.process.pid, signal.SIGKILL)
            return self.process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def selector_process(
    port: int,
    log_file: Path,
    env: dict[str, str],
    workers: int = 2,
    threads: int = 8,
    server: str | None = None,
) -> ManagedProcess:
    """`rollout serve` on a port, ready when /readyz answers 200 (`server`: its default)."""
    command = [
        venv_executable("rollout"),
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        *(["--server", server] if server else []),
    ]
    return ManagedProcess("selector", command, f"http://127.0.0.1:{port}/readyz", log_file, env)
