"""The selector's one boundary to Unleash: flag evaluation through `UnleashClient`.

Embedded mode compiles flags/ into the client-features format and loads it through the SDK's
cache with the offline connector; server mode polls a real Unleash server with a backend
token. Everything after that (the Yggdrasil engine, stickiness, constraints) is the same code.

The SDK's `get_variant` cannot tell "flag off" from "no strategy matched", nor a missing flag
from a disabled one, so the cache below also keeps a small index of the raw feature state,
rebuilt only when the SDK stores a new state (not per request).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from UnleashClient import UnleashClient
from UnleashClient.cache import BaseCache
from UnleashClient.constants import FEATURES_URL

from service.config import Settings
from service.errors import ConfigError
from service.files import write_atomically
from service.flags.client_features import DEFAULT_VARIANT, SHADOW_PREFIX, client_features
from service.flags.definitions import FlagSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlagState:
    """What the raw feature state says about one flag, beyond what `get_variant` returns."""

    enabled: bool
    default_bento: str | None
    shadows: tuple[str, ...] = ()  # bento tags mirrored every request, in variant-name order


@dataclass(frozen=True)
class Variant:
    """The SDK's answer for one flag and context."""

    name: str
    bento: str | None  # the payload: the bento tag this variant serves
    flag_enabled: bool  # False when the flag is off or no strategy matched


class FeatureStateCache(BaseCache):
    """An in-memory SDK cache that indexes each new feature state and keeps the last one on disk.

    The disk copy (written atomically, so several workers may share it) lets the selector start
    and serve the last-known flags while the Unleash server is unreachable.
    """

    def __init__(self, snapshot: Path | None = None) -> None:
        self._values: dict[str, Any] = {}
        self._snapshot = snapshot
        self.flags: dict[str, FlagState] = {}
        self.updated = threading.Event()

    def bootstrap_from_dict(self, features: dict[str, Any]) -> None:
        self.set(FEATURES_URL, json.dumps(features))
        self.bootstrapped = True

    def bootstrap_from_snapshot(self) -> bool:
        """Load the last-known state saved by an earlier run, if any."""
        if self._snapshot is None or not self._snapshot.exists():
            return False
        self.set(FEATURES_URL, self._snapshot.read_text(encoding="utf-8"))
        self.bootstrapped = True
        return True

    def set(self, key: str, value: Any) -> None:
        if key == FEATURES_URL and value != self._values.get(key):
            self.flags = _index(value)
            self._save_snapshot(value)
            self.updated.set()
        self._values[key] = value

    def mset(self, data: dict[str, Any]) -> None:
        for key, value in data.items():
            self.set(key, value)

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def exists(self, key: str) -> bool:
        return key in self._values

    def destroy(self) -> None:
        self._values.clear()

    def _save_snapshot(self, raw: str) -> None:
        if self._snapshot is None:
            return
        try:
            self._snapshot.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self._snapshot, raw)
        except OSError:  # a snapshot is a convenience; serving must not depend on it
            log.exception("could not save the flag snapshot to %s", self._snapshot)


def _index(raw: str) -> dict[str, FlagState]:
    try:
        features = json.loads(raw).get("features", [])
    except (ValueError, AttributeError):
        log.error("unreadable feature state; keeping no flag index")
        return {}
    return {
        f["name"]: FlagState(bool(f.get("enabled")), _default_bento(f), _shadow_bentos(f))
        for f in features
    }


def _shadow_bentos(feature: dict[str, Any]) -> tuple[str, ...]:
    variants = sorted(feature.get("variants") or [], key=lambda v: str(v.get("name")))
    tags = (
        (v.get("payload") or {}).get("value")
        for v in variants
        if str(v.get("name", "")).startswith(SHADOW_PREFIX)
    )
    return tuple(dict.fromkeys(t for t in tags if isinstance(t, str) and t))


def _default_bento(feature: dict[str, Any]) -> str | None:
    for variant in feature.get("variants") or []:
        if variant.get("name") == DEFAULT_VARIANT:
            return (variant.get("payload") or {}).get("value")
    return None


class FlagClient:
    """Evaluates model flags for a context. Never raises on the request path."""

    def __init__(self, settings: Settings, flag_set: FlagSet | None = None) -> None:
        self.settings = settings
        self.mode = "server" if settings.unleash_url else "embedded"
        self.cache = FeatureStateCache(self._snapshot_path())
        self._client = self._build_client(flag_set)

    def _snapshot_path(self) -> Path | None:
        if self.mode == "embedded":
            return None
        return self.settings.unleash_cache_dir / f"{self.settings.environment}-features.json"

    def _build_client(self, flag_set: FlagSet | None) -> UnleashClient:
        if self.mode == "embedded":
            if flag_set is None:
                raise ConfigError("embedded mode needs the flag definitions from flags/")
            self.cache.bootstrap_from_dict(client_features(flag_set, self.settings.environment))
            url, headers = "http://embedded.invalid/api", {}
        else:
            if not self.settings.unleash_token:
                token_file = os.environ.get("UNLEASH_API_TOKEN_FILE")
                unreadable = f" ({token_file} cannot be read)" if token_file else ""
                raise ConfigError(
                    "UNLEASH_URL is set but no backend token: set "
                    f"UNLEASH_API_TOKEN or UNLEASH_API_TOKEN_FILE{unreadable}"
                )
            self.cache.bootstrap_from_snapshot()
            url = self.settings.unleash_url.rstrip("/")  # type: ignore[union-attr]
            url = url if url.endswith("/api") else f"{url}/api"
            headers = {"Authorization": self.settings.unleash_token}
        return UnleashClient(
            url=url,
            app_name=self.settings.app_name,
            environment=self.settings.environment,
            refresh_interval=self.settings.refresh_interval,
            custom_headers=headers,
            cache=self.cache,
            disable_metrics=self.mode == "embedded",
            disable_registration=self.mode == "embedded",
            request_timeout=5,
            request_retries=1,
            verbose_log_level=logging.DEBUG,
        )

    def start(self) -> None:
        self._client.initialize_client(fetch_toggles=self.mode == "server")

    def close(self) -> None:
        self._client.destroy()

    @property
    def ready(self) -> bool:
        """True once some feature state (fetched, bootstrapped or last-known) is loaded."""
        return self.cache.exists(FEATURES_URL)

    def flag(self, name: str) -> FlagState | None:
        return self.cache.flags.get(name)

    def flags(self) -> dict[str, FlagState]:
        return dict(self.cache.flags)

    def variant(self, flag: str, context: dict[str, Any]) -> Variant:
        result = self._client.get_variant(flag, context)
        payload = result.get("payload") or {}
        return Variant(
            name=result.get("name", "disabled"),
            bento=payload.get("value"),
            flag_enabled=bool(result.get("feature_enabled")),
        )
