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
from service.flags.client_features import client_features
from service.flags.model import FlagSet
from service.flags.payloads import read_payload
from service.flags.routes import FlagRoutes, flag_routes
from service.serving.engine_variants import EngineVariants

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """The SDK's answer for one flag and context."""

    name: str
    payload: dict[str, Any] | None  # as Unleash holds it: {"type": ..., "value": ...}
    flag_enabled: bool  # False when the flag is off or no strategy matched

    @property
    def bento(self) -> str | None:
        """The bento tag its payload names (string `churn:v2` or JSON {"bento": ...})."""
        return read_payload(self.payload).bento


class FeatureStateCache(BaseCache):
    """An in-memory SDK cache that indexes each new feature state and keeps the last one on disk.

    The disk copy (written atomically, so several workers may share it) lets the selector start
    and serve the last-known flags while the Unleash server is unreachable. It also remembers
    each flag's model family (kept beside the snapshot), so a flag archived in the UI, or one
    whose variants no longer name any bento, still serves its family's stable bento.
    """

    def __init__(self, snapshot: Path | None = None) -> None:
        self._values: dict[str, Any] = {}
        self._snapshot = snapshot
        self.flags: dict[str, FlagRoutes] = {}
        self.families: dict[str, str] = self._load_families()
        self.generation = 0  # bumped with every new feature state
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
            self._remember_families()
            self.generation += 1
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
        if self._snapshot is not None:
            _write_atomically(self._snapshot, raw)

    @property
    def _families_file(self) -> Path | None:
        return (
            self._snapshot.with_name(f"{self._snapshot.stem}-families.json")
            if self._snapshot
            else None
        )

    def _load_families(self) -> dict[str, str]:
        path = self._families_file
        try:
            raw = json.loads(path.read_text(encoding="utf-8")) if path else {}
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def _remember_families(self) -> None:
        learnt = {name: r.family for name, r in self.flags.items() if r.family}
        if all(self.families.get(name) == family for name, family in learnt.items()):
            return
        self.families = {**self.families, **learnt}
        if self._families_file is not None:
            _write_atomically(self._families_file, json.dumps(self.families, indent=1))


def _write_atomically(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, text)
    except OSError:  # a snapshot is a convenience; serving must not depend on it
        log.exception("could not save %s", path)


def _index(raw: str) -> dict[str, FlagRoutes]:
    try:
        features = json.loads(raw).get("features", [])
        return {str(f["name"]): flag_routes(f) for f in features if isinstance(f, dict)}
    except (ValueError, AttributeError, KeyError, TypeError):
        log.error("unreadable feature state; keeping no flag index")
        return {}


def check_settings(settings: Settings) -> None:
    """ConfigError for settings no flag client can start with (`rollout serve` checks them in
    the master too, so a mistake is one message rather than a traceback per worker)."""
    if settings.unleash_url and not settings.unleash_token:
        token_file = os.environ.get("UNLEASH_API_TOKEN_FILE")
        unreadable = f" ({token_file} cannot be read)" if token_file else ""
        raise ConfigError(
            "UNLEASH_URL is set but no backend token: set "
            f"UNLEASH_API_TOKEN or UNLEASH_API_TOKEN_FILE{unreadable}"
        )
    # The SDK's polling and usage reports: whole seconds, at least one (0 would spin).
    for name in ("refresh_interval", "metrics_interval"):
        value = getattr(settings, name)
        if value < 1:
            raise ConfigError(f"ROLLOUT_{name.upper()} must be at least 1 second, not {value}")


class FlagClient:
    """Evaluates model flags for a context. Never raises on the request path."""

    def __init__(
        self,
        settings: Settings,
        flag_set: FlagSet | None = None,
        features: dict[str, Any] | None = None,
    ) -> None:
        """Server mode when `settings.unleash_url` is set; else embedded, on `flag_set` compiled
        or on a ready client-features document `features` (e.g. a server's, for tests)."""
        check_settings(settings)
        self.settings = settings
        self.mode = "server" if settings.unleash_url else "embedded"
        self.cache = FeatureStateCache(self._snapshot_path())
        self._client = self._build_client(flag_set, features)
        # The same engine without the SDK's per-call wrapping (None: the SDK answers).
        self._variants = EngineVariants.attach(self._client)

    def _snapshot_path(self) -> Path | None:
        if self.mode == "embedded":
            return None
        return self.settings.unleash_cache_dir / f"{self.settings.environment}-features.json"

    def _build_client(
        self, flag_set: FlagSet | None, features: dict[str, Any] | None
    ) -> UnleashClient:
        if self.mode == "embedded":
            if flag_set is not None:
                features = client_features(flag_set, self.settings.environment)
            if features is None:
                raise ConfigError("embedded mode needs the flag definitions from flags/")
            self.cache.bootstrap_from_dict(features)
            url, headers = "http://embedded.invalid/api", {}
        else:
            self.cache.bootstrap_from_snapshot()
            url = self.settings.unleash_url.rstrip("/")  # type: ignore[union-attr]
            url = url if url.endswith("/api") else f"{url}/api"
            headers = {"Authorization": self.settings.unleash_token}
        return UnleashClient(
            url=url,
            app_name=self.settings.app_name,
            environment=self.settings.environment,
            refresh_interval=self.settings.refresh_interval,
            metrics_interval=self.settings.metrics_interval,
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
        if self._variants is not None:  # its usage counts first: the SDK sends them on destroy
            self._variants.close()
        self._client.destroy()

    @property
    def ready(self) -> bool:
        """True once some feature state (fetched, bootstrapped or last-known) is loaded."""
        return self.cache.exists(FEATURES_URL)

    def flag(self, name: str) -> FlagRoutes | None:
        return self.cache.flags.get(name)

    def flags(self) -> dict[str, FlagRoutes]:
        return dict(self.cache.flags)

    def family(self, name: str) -> str | None:
        """The flag's model family: named by its variants now, or remembered from before."""
        routes = self.cache.flags.get(name)
        return (routes.family if routes else None) or self.cache.families.get(name)

    @property
    def generation(self) -> int:
        """Changes whenever a new feature state is loaded."""
        return self.cache.generation

    def variant(self, flag: str, context: dict[str, Any]) -> Variant:
        source = self._variants or self._client
        result = source.get_variant(flag, context)
        return Variant(
            name=result.get("name", "disabled"),
            payload=result.get("payload"),
            flag_enabled=bool(result.get("feature_enabled")),
        )
