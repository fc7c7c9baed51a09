"""`rollout unleash up` / `down`: a local Unleash to try the UI with, loaded with flags/.

`up` starts the same real Unleash server the tests use (service.harness.unleash_server) on a
database of its own, applies flags/ to it through the Admin API, writes its tokens to files
readable only by the owner (never printed), records what it started in
`<data>/unleash/state.json`, and leaves it running. `down` stops exactly what `up` started and
drops its database. One local Unleash per data folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from service.config import Settings
from service.errors import ConfigError, RolloutError
from service.files import write_atomically
from service.flags.audit import AuditStore
from service.flags.definitions import load_flags
from service.flags.sync import Who, apply, create_context_fields
from service.flags.unleash_admin import UnleashAdmin
from service.harness.unleash_server import UnleashServer, stop_detached
from service.processes import pid_alive
from service.registry.versions import declared_bentos
from service.store.events import create_engine

UI_LOGIN = ("admin", "unleash4all")  # Unleash's own default admin user


@dataclass(frozen=True)
class LocalUnleash:
    """What `up` started: enough for `down` to stop it and for a person to use it."""

    pid: int
    url: str
    database: str
    log: str
    admin_token_file: str
    backend_token_file: str
    flags: list[str]

    def exports(self) -> list[str]:
        """The shell lines that point the selector and `rollout flags` at this server."""
        return [
            f"export UNLEASH_URL={self.url}",
            f"export UNLEASH_API_TOKEN_FILE={self.backend_token_file}",
            f"export UNLEASH_ADMIN_TOKEN_FILE={self.admin_token_file}",
        ]


def state_dir(settings: Settings) -> Path:
    return settings.data_dir / "unleash"


def running(settings: Settings) -> LocalUnleash | None:
    """The local Unleash `up` recorded, if its process still runs."""
    path = state_dir(settings) / "state.json"
    try:
        local = LocalUnleash(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    return local if pid_alive(local.pid) else None


def up(
    settings: Settings, port: int | None = None, progress: Callable[[str], Any] = print
) -> LocalUnleash:
    """Start a local Unleash, apply flags/ to it, and leave it running."""
    current = running(settings)
    if current is not None:
        raise RolloutError(f"a local Unleash already runs at {current.url} (rollout unleash down)")
    flag_set = load_flags(settings.flags_dir, declared_bentos(settings.bentos_dir))
    folder = state_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    progress("starting Unleash 8.2 on PostgreSQL (a few seconds) and applying flags/")
    server = UnleashServer(port=port, keep_log=True).start()
    try:
        admin = UnleashAdmin(server.url, server.admin_token)
        create_context_fields(admin, flag_set)
        store = AuditStore(create_engine(settings.event_store_url))
        apply(admin, flag_set, store, Who("rollout unleash up", "local Unleash to try the UI"))
        local = _record(server, folder, sorted(flag_set.flags))
    except BaseException:
        server.stop(keep_log=True)
        raise
    server.detach()
    return local


def down(settings: Settings) -> LocalUnleash:
    """Stop what `up` started and drop its database; RolloutError when nothing was started."""
    path = state_dir(settings) / "state.json"
    try:
        local = LocalUnleash(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        hint = "start one: rollout unleash up"
        raise ConfigError(f"no local Unleash recorded in {path} ({hint})") from exc
    stop_detached(local.pid, local.database)
    for name in ("state.json", "admin-token", "backend-token"):
        (state_dir(settings) / name).unlink(missing_ok=True)
    return local


def _record(server: UnleashServer, folder: Path, flags: list[str]) -> LocalUnleash:
    admin_file, backend_file = folder / "admin-token", folder / "backend-token"
    write_atomically(admin_file, server.admin_token + "\n", mode=0o600)
    write_atomically(backend_file, server.backend_token + "\n", mode=0o600)
    local = LocalUnleash(
        pid=server.pid or 0,
        url=server.url,
        database=server.database,
        log=str(server.log_path),
        admin_token_file=str(admin_file.resolve()),
        backend_token_file=str(backend_file.resolve()),
        flags=flags,
    )
    write_atomically(folder / "state.json", json.dumps(asdict(local), indent=2) + "\n")
    return local
