"""API keys: who may call what. The file's format is `service.api_keys`.

The keys file (`ROLLOUT_API_KEYS_FILE`, default `.data/api-keys`) is JSON written by
`rollout keys create|revoke` (atomically, mode 0600) and read by every selector worker. A worker
looks at the file's identity (inode, size, mtime) on each check and reloads it when it changed,
so a new or revoked key takes effect without a restart. Presented keys are compared with
`hmac.compare_digest` against every stored hash, whatever matches first.
"""

from __future__ import annotations

import fcntl
import hmac
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.api_keys import KEY_PREFIX, SCOPES, ApiKey, bearer, digest, read_keys
from service.errors import BadRequest, ConfigError, Forbidden, RolloutError, Unauthorized

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class KeysUnreadable(RolloutError):
    """The keys file exists but cannot be read: refuse, never fall back to open access."""

    status = 503
    code = "keys_unavailable"


def parse_scopes(text: str) -> tuple[str, ...]:
    """`outcomes,predict` -> ('outcomes', 'predict'); BadRequest naming an unknown scope."""
    scopes = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise BadRequest(
            f"unknown scope(s) {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(SCOPES)}"
        )
    return scopes


class KeyFile:
    """The keys file, for the CLI: create, list, revoke. Writes are locked and atomic."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def keys(self) -> list[ApiKey]:
        return read_keys(self.path)

    def create(self, name: str, scopes: tuple[str, ...]) -> str:
        """Store a new key's hash; return the key itself (shown once, never stored)."""
        if not _NAME.match(name):
            raise BadRequest(f"key name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        with self._locked() as keys:
            if any(k.name == name for k in keys):
                raise BadRequest(f"a key named {name!r} exists; revoke it first")
            keys.append(ApiKey(name, digest(secret), scopes, created))
        return secret

    def revoke(self, name: str) -> ApiKey:
        with self._locked() as keys:
            found = [k for k in keys if k.name == name]
            if not found:
                raise BadRequest(f"no key named {name!r} in {self.path}")
            keys.remove(found[0])
        return found[0]

    @contextmanager
    def _locked(self) -> Iterator[list[ApiKey]]:
        """The keys, changed in place by the caller, then written back under one lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            keys = self.keys()
            yield keys
            _write(self.path, keys)


def _write(path: Path, keys: list[ApiKey]) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"keys": [asdict(k) for k in keys]}, out, indent=2)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)


class KeyRing:
    """The serving side: the current keys of one file, reloaded when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._identity: tuple[int, int, int] | None = None
        self._keys: list[ApiKey] = []
        self._broken: str | None = None

    def any(self) -> bool:
        """Whether any key exists (then outcomes need one)."""
        self._refresh()
        return bool(self._keys) or self._broken is not None

    def check(self, authorization: str | None, scope: str) -> ApiKey:
        """The key presented in an `Authorization: Bearer` header, if it has `scope`.

        Unauthorized (401) without a known key, Forbidden (403) for a key without the scope.
        Messages never contain what was presented.
        """
        self._refresh()
        if self._broken is not None:
            raise KeysUnreadable("the selector cannot read its API keys; see its log")
        presented = bearer(authorization)
        if presented is None:
            raise Unauthorized(f"send 'Authorization: Bearer <key>' with a key of scope {scope}")
        key = self._match(digest(presented))
        if key is None:
            raise Unauthorized("unknown or revoked API key")
        if scope not in key.scopes:
            raise Forbidden(f"API key '{key.name}' lacks scope {scope}")
        return key

    def _match(self, presented: str) -> ApiKey | None:
        found = None
        for key in self._keys:  # no early exit: the time taken does not depend on the match
            if hmac.compare_digest(key.sha256, presented):
                found = key
        return found

    def _refresh(self) -> None:
        identity = _identity(self.path)
        if identity == self._identity:
            return
        with self._lock:
            if identity == self._identity:
                return
            try:
                self._keys, self._broken = read_keys(self.path), None
            except ConfigError as exc:
                self._keys, self._broken = [], exc.message
                log.error("refusing authenticated calls: %s", exc.message)
            self._identity = identity


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def as_json(keys: list[ApiKey]) -> list[dict[str, Any]]:
    """What `rollout keys list --json` shows: everything but the hash."""
    return [{"name": k.name, "scopes": list(k.scopes), "created_at": k.created_at} for k in keys]


class Access:
    """Which calls need which scope, given the settings and whether any key exists."""

    def __init__(self, ring: KeyRing, required: str = "", protect_metrics: bool = False) -> None:
        self.ring = ring
        self.required = set(parse_scopes(required)) if required.strip() else set()
        if protect_metrics:
            self.required.add("metrics")

    def needs(self, scope: str) -> bool:
        # Outcomes feed the reports the guard acts on: keyed as soon as any key exists.
        return scope in self.required or (scope == "outcomes" and self.ring.any())

    def authorize(self, scope: str, authorization: str | None) -> ApiKey | None:
        """The caller's key when `scope` needs one (401/403 otherwise), else None."""
        if not self.needs(scope):
            return None
        return self.ring.check(authorization, scope)
