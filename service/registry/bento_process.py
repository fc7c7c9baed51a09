"""A real `bentoml serve <tag>` as a managed subprocess (for the demo and integration tests).

`bentoml serve` starts an arbiter that spawns the API worker processes; ManagedProcess runs
it in a process group of its own and stops the whole group, so no worker keeps the port.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from service.config import Settings
from service.processes import ManagedProcess, free_port, venv_executable


def bentoml_executable() -> Path:
    """The `bentoml` script next to the running interpreter (the project's venv)."""
    return Path(venv_executable("bentoml"))


def bentoml_env(bentoml_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for any BentoML subprocess: the project's store, no usage tracking."""
    return {
        **os.environ,
        "BENTOML_HOME": str(bentoml_home),
        "BENTOML_DO_NOT_TRACK": "true",
        **(extra or {}),
    }


class BentoProcess(ManagedProcess):
    """`bentoml serve <tag>` on the store of `settings`, ready when its /readyz answers.

    Output goes to `log_path` (default `<data_dir>/logs/bentoml-serve-<name>-<version>.log`).
    `start()` (or entering the context manager) returns at once, so several bentos boot in
    parallel; `wait_ready()` then blocks until one answers. Leaving the context stops it.
    """

    def __init__(
        self,
        tag: str,
        port: int | None = None,
        settings: Settings | None = None,
        *,
        log_path: Path | None = None,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
    ) -> None:
        settings = settings or Settings.load()
        self.tag, self.host, self.port = tag, host, port or free_port()
        log = log_path or settings.data_dir / "logs" / f"bentoml-serve-{tag.replace(':', '-')}.log"
        command = [
            str(bentoml_executable()),
            "serve",
            tag,
            "--port",
            str(self.port),
            "--host",
            host,
        ]
        super().__init__(
            f"bento {tag}",
            command,
            f"{self.url}/readyz",
            log,
            bentoml_env(settings.bentoml_home, env),
        )

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. `http://127.0.0.1:3001`."""
        return f"http://{self.host}:{self.port}"
