"""The API keys file's format, shared by the selector (which checks keys) and the console (which
lets a key of scope `operate` act): `{"keys": [{name, sha256, scopes, created_at}]}`.

Only a key's SHA-256 is stored, never the key itself. Keys are 256-bit random, so a plain
SHA-256 is enough (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from service.errors import ConfigError

# outcomes: POST /v1/outcomes; predict: predict and resolve (when required); metrics: /metrics
# (when protected); operate: console actions.
SCOPES = ("outcomes", "predict", "metrics", "operate")
KEY_PREFIX = "rk_"


@dataclass(frozen=True)
class ApiKey:
    """One key as stored: its name, the hash of its secret, its scopes and when it was made."""

    name: str
    sha256: str
    scopes: tuple[str, ...]
    created_at: str

    def describe(self) -> str:
        return f"{self.name}\t{','.join(self.scopes)}\t{self.created_at}"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_keys(path: Path) -> list[ApiKey]:
    """Every key in `path`; none when it does not exist; ConfigError when it is broken."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the API keys file {path} is unreadable: {exc}") from exc
    try:
        return [
            ApiKey(k["name"], k["sha256"], tuple(k["scopes"]), k["created_at"]) for k in doc["keys"]
        ]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"the API keys file {path} is malformed ({exc!r})") from exc


def bearer(header: str | None) -> str | None:
    """The key in an `Authorization: Bearer <key>` header; None for anything else."""
    kind, _, value = (header or "").partition(" ")
    value = value.strip()
    return value if kind.lower() == "bearer" and value else None
