"""A real Unleash server (unleash-server 8.2.0 on Node 22) on a fresh PostgreSQL database.

Used by the integration tests and by demos that want the real Unleash UI and Admin API. The
server is installed once, outside the repo, by ``scripts/install-unleash`` (``make unleash``);
each :class:`UnleashServer` gets its own database and a free port, so runs never share state:

    with UnleashServer() as unleash:
        admin = UnleashAdmin(unleash.url, unleash.admin_token)

Tokens are created at first start through ``INIT_*_API_TOKENS`` (the only way that works in
8.2.0): one admin token, and one backend (client SDK) token each for ``development`` and
``production``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
import requests
from psycopg import sql

from service.errors import ConfigError, RolloutError

UNLEASH_VERSION = "8.2.0"
INSTALL_HINT = "run `scripts/install-unleash` (or `make unleash`) to install it"
START_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "unleash-server.mjs"
DATABASE_PREFIX = "rollout_unleash_"
# Variables Unleash itself reads: ours must not be overridden by the caller's (e.g. the
# selector's UNLEASH_URL, an events DATABASE_URL), so they are not passed through.
_SERVER_ENV_PREFIXES = ("INIT_", "DATABASE_", "UNLEASH_", "HTTP_", "PORT", "BASE_URI_PATH", "AUTH_")


def default_install_home() -> Path:
    """Where ``scripts/install-unleash`` puts Node 22 and unleash-server (same rule as there)."""
    if home := os.environ.get("ROLLOUT_UNLEASH_HOME"):
        return Path(home)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "model-rollout" / f"unleash-{UNLEASH_VERSION}"


@dataclass(frozen=True)
class UnleashInstall:
    """A checked install: the Node 22 binary and the unleash-server package next to it."""

    home: Path

    @property
    def node(self) -> Path:
        return self.home / "node_modules" / ".bin" / "node"

    @classmethod
    def locate(cls, home: Path | None = None) -> UnleashInstall:
        """Return the install at ``home`` (default: the cache); raise ConfigError if missing."""
        install = cls(home or default_install_home())
        package = install.home / "node_modules" / "unleash-server" / "package.json"
        for needed in (install.node, package, install.home / ".installed"):
            if not needed.exists():
                raise ConfigError(
                    f"Unleash server is not installed ({needed} is missing): {INSTALL_HINT}"
                )
        if not START_SCRIPT.exists():
            raise ConfigError(f"Unleash start script {START_SCRIPT} is missing from the checkout")
        return install


@dataclass(frozen=True)
class PostgresServer:
    """The PostgreSQL server that hosts the scratch databases; libpq ``PG*`` vars override."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = ""

    @classmethod
    def from_env(cls) -> PostgresServer:
        env = os.environ
        return cls(
            host=env.get("PGHOST", cls.host),
            port=int(env.get("PGPORT", cls.port)),
            user=env.get("PGUSER", cls.user),
            password=env.get("PGPASSWORD", cls.password),
        )

    def url(self, database: str) -> str:
        """A ``postgres://`` URL for ``database`` on this server."""
        auth = f"{self.user}:{self.password}" if self.password else self.user
        return f"postgres://{auth}@{self.host}:{self.port}/{database}"

    def execute(self, statement: sql.Composed) -> None:
        """Run one statement on the ``postgres`` maintenance database, outside a transaction."""
        try:
            with psycopg.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password or None,
                dbname="postgres",
                autocommit=True,
                connect_timeout=10,
            ) as conn:
                conn.execute(statement)
        except psycopg.OperationalError as exc:
            raise ConfigError(
                f"cannot use PostgreSQL at {self.user}@{self.host}:{self.port} "
                f"(set PGHOST/PGPORT/PGUSER/PGPASSWORD to point elsewhere): {exc}"
            ) from exc

    def create_database(self, name: str) -> None:
        self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        # FORCE: a killed server may leave connections behind.
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


class UnleashServer:
    """One Unleash server process on its own fresh database; a context manager.

    ``start()`` raises ConfigError when the install or PostgreSQL is missing, and RolloutError
    (with the tail of the server log) when the server exits or is not ready within
    ``start_timeout`` seconds. ``stop()`` terminates the process and drops the database.
    """

    def __init__(
        self,
        *,
        home: Path | None = None,
        port: int | None = None,
        postgres: PostgresServer | None = None,
        start_timeout: float = 90.0,
        keep_log: bool = False,
    ) -> None:
        self.install = UnleashInstall.locate(home)
        self.host = "127.0.0.1"
        # None: the server binds port 0 and reports the port it got (no race with others).
        self.requested_port = port
        self.port: int | None = port
        self.postgres = postgres or PostgresServer.from_env()
        self.database = f"{DATABASE_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        self.start_timeout = start_timeout
        self.keep_log = keep_log
        self.admin_token = f"*:*.{secrets.token_hex(16)}"
        self.backend_token = f"*:development.{secrets.token_hex(16)}"
        self.production_backend_token = f"*:production.{secrets.token_hex(16)}"
        self.log_dir: Path | None = None  # made at start, removed at stop unless keep_log
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._database_created = False

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"UnleashServer(port={self.port}, database={self.database!r}, {state})"

    @property
    def url(self) -> str:
        """Base URL of the server (the UI is at ``/``, the APIs under ``/api``)."""
        if self.port is None:
            raise RolloutError("the Unleash server has no URL before start() returns")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server process's id while this object manages it."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Create the database, start the server and wait until its APIs answer."""
        started = time.monotonic()
        self.port = self.requested_port
        try:
            self.postgres.create_database(self.database)
            self._database_created = True
            self._spawn()
            self._wait_until_ready(started + self.start_timeout)
        except BaseException:
            self.stop(keep_log=True)
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def check_alive(self) -> None:
        """Raise RolloutError, with the log's tail, if the server process has exited."""
        if self._process is None:
            raise RolloutError("the Unleash server is not started")
        if self._process.poll() is not None:
            self.keep_log = True  # the log is the only trace of why
            self._fail(f"exited unexpectedly with status {self._process.returncode}")

    def stop(self, *, keep_log: bool | None = None) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 10 s) and drop its database.

        The log is kept (and named in the error) if the server had died on its own.
        """
        if self._process is not None:
            if self._process.poll() is not None:
                self.keep_log = True
            _terminate(self._process)
            self._process = None
        if self._database_created:
            self.postgres.drop_database(self.database)
            self._database_created = False
        if self.log_dir is not None and not (self.keep_log if keep_log is None else keep_log):
            shutil.rmtree(self.log_dir, ignore_errors=True)
            self.log_dir = None

    def detach(self) -> int:
        """Leave the started server running beyond this object; return its process id.

        The database and log stay too: `stop_detached` (given the pid and database) ends both.
        """
        if self._process is None or self._process.poll() is not None:
            raise RolloutError("the Unleash server is not running")
        pid = self._process.pid
        self._process, self._database_created = None, False
        return pid

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def log_path(self) -> Path | None:
        """The server's log file (stdout and stderr), while the server runs or was kept."""
        return self.log_dir / "unleash.log" if self.log_dir else None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server log ('' if there is none)."""
        try:
            text = self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SERVER_ENV_PREFIXES)}
        backend_tokens = f"{self.backend_token},{self.production_backend_token}"
        env.update(
            ROLLOUT_UNLEASH_HOME=str(self.install.home),
            UNLEASH_HOST=self.host,
            UNLEASH_PORT=str(self.port or 0),
            UNLEASH_PORT_FILE=str(self._port_file),
            UNLEASH_DATABASE_URL=self.postgres.url(self.database),
            INIT_ADMIN_API_TOKENS=self.admin_token,
            INIT_BACKEND_API_TOKENS=backend_tokens,
            SEND_TELEMETRY="false",
            CHECK_VERSION="false",
            TZ="UTC",
        )
        return env

    def _spawn(self) -> None:
        self.log_dir = Path(tempfile.mkdtemp(prefix="unleash-server-"))
        with (self.log_dir / "unleash.log").open("ab") as log:
            self._process = subprocess.Popen(
                [str(self.install.node), str(START_SCRIPT)],
                cwd=self.install.home,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not the server
            )

    @property
    def _port_file(self) -> Path:
        assert self.log_dir is not None
        return self.log_dir / "port"

    def _wait_until_ready(self, deadline: float) -> None:
        """Wait for the bound port, then poll ``/health`` and an admin call (tokens work)."""
        with requests.Session() as http:
            while not self._answers(http):
                if self._process is not None and self._process.poll() is not None:
                    self._fail(f"exited with status {self._process.returncode} while starting")
                if time.monotonic() > deadline:
                    self._fail(f"was not ready within {self.start_timeout:g} s")
                time.sleep(0.1)

    def _answers(self, http: requests.Session) -> bool:
        if self.port is None:
            if not self._port_file.exists():
                return False
            self.port = int(self._port_file.read_text())
        try:
            health = http.get(f"{self.url}/health", timeout=2)
            if health.status_code != 200:
                return False
            admin = http.get(
                f"{self.url}/api/admin/projects",
                headers={"Authorization": self.admin_token},
                timeout=2,
            )
        except requests.RequestException:
            return False
        return admin.status_code == 200

    def _fail(self, what: str) -> None:
        raise RolloutError(
            f"Unleash server (database {self.database}) {what}; log {self.log_path}, last lines:\n"
            f"{self.log_tail()}"
        )


def stop_detached(pid: int, database: str, postgres: PostgresServer | None = None) -> bool:
    """Stop a detached server (SIGTERM to its session, SIGKILL after 10 s), drop its database.

    Returns False when the process was already gone (its database is dropped all the same).
    """
    alive = _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while alive and time.monotonic() < deadline and _signal_group(pid, 0):
        time.sleep(0.1)  # poll while Unleash shuts down gracefully
    if alive and _signal_group(pid, 0):
        _signal_group(pid, signal.SIGKILL)
    (postgres or PostgresServer.from_env()).drop_database(database)
    return alive


def _signal_group(pid: int, sig: int) -> bool:
    """Send `sig` to the server's process group (it leads its own session); False if gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _terminate(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM (Unleash shuts down gracefully on it), then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)
