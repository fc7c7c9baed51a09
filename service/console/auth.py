"""Who may act in the console: one function, `operator_of(request)`, decides it.

An operator is a key with scope `operate` in the selector's API keys file
(ROLLOUT_API_KEYS_FILE, made by `rollout keys create NAME --scopes operate`;
ROLLOUT_CONSOLE_OPERATOR_KEYS_FILE names another file of the same format). The console only
reads it: `{"keys": [{name, sha256, scopes, created_at}]}`, SHA-256 hashes only.

A key is presented once, on the login form (or as `Authorization: Bearer <key>` by a script);
the signed session cookie then carries the key's hash, never the key, and every check looks
the hash up again, so a revoked key stops working at once. ROLLOUT_CONSOLE_READ_ONLY=1 refuses
every action whatever keys exist. Every form that changes state carries a CSRF token bound to
the session.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.api_keys import ApiKey, bearer, digest, read_keys

OPERATE = "operate"
SESSION_KEY = "operator_key_sha256"
SESSION_CSRF = "csrf"


class OperatorKeys:
    """The keys file, read on every check (it is small): a revoked key stops at once."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def keys(self) -> list[ApiKey]:
        return read_keys(self.path)

    def operator(self, key_sha256: str) -> str | None:
        """The name of the key with this hash and scope `operate`; None otherwise."""
        found = None
        for key in self.keys():  # no early exit: the time taken does not depend on the match
            if hmac.compare_digest(key.sha256, key_sha256) and OPERATE in key.scopes:
                found = key.name
        return found


@dataclass(frozen=True)
class Gate:
    """What `operator_of` needs: the keys, and whether the console is read-only."""

    keys: OperatorKeys
    read_only: bool


def operator_of(request: Any, session: Any, gate: Gate) -> str | None:
    """The operator behind this request (a key with scope `operate`), or None.

    A Bearer header counts for this request only; otherwise the key hash the login stored in
    the session. Read-only consoles have no operators.
    """
    if gate.read_only:
        return None
    presented = bearer(request.headers.get("Authorization"))
    if presented is not None:
        return gate.keys.operator(digest(presented))
    stored = session.get(SESSION_KEY)
    return gate.keys.operator(stored) if isinstance(stored, str) else None


def log_in(session: Any, gate: Gate, key: str) -> str | None:
    """Check a key typed on the login form; remember its hash in the session when it operates."""
    if gate.read_only:
        return None
    hashed = digest(key.strip())
    name = gate.keys.operator(hashed)
    if name is not None:
        session.clear()
        session[SESSION_KEY] = hashed
        session[SESSION_CSRF] = secrets.token_urlsafe(32)  # a new session, a new token
    return name


def csrf_token(session: Any) -> str:
    """The session's CSRF token, made on first use."""
    token = session.get(SESSION_CSRF)
    if not isinstance(token, str):
        token = session[SESSION_CSRF] = secrets.token_urlsafe(32)
    return token


def csrf_ok(session: Any, presented: str | None) -> bool:
    expected = session.get(SESSION_CSRF)
    return (
        isinstance(expected, str)
        and bool(presented)
        and hmac.compare_digest(expected, presented or "")
    )
