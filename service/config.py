"""Settings: defaults, then environment variables (prefix ROLLOUT_), then explicit overrides.

Nothing is read at import time; `Settings.load()` is called by the app factory and the CLI.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from service.errors import ConfigError

ENV_PREFIX = "ROLLOUT_"


def _project_root() -> Path:
    """The checkout this package lives in (flags/, bentos/ and notebooks/ sit beside service/)."""
    return Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    root: Path = field(default_factory=_project_root)
    data_dir: Path = field(default_factory=lambda: _project_root() / ".data")
    flags_dir: Path = field(default_factory=lambda: _project_root() / "flags")
    bentos_dir: Path = field(default_factory=lambda: _project_root() / "bentos")
    reports_dir: Path = field(default_factory=lambda: _project_root() / "reports")
    notebooks_dir: Path = field(default_factory=lambda: _project_root() / "notebooks")
    # Where reports_dir is served over HTTP, for links from Unleash to a change's evidence
    # (without it the links are file:// URLs, which browsers will not open from the UI).
    reports_url: str | None = None
    environment: str = "development"
    app_name: str = "model-selector"
    # Server mode when set; embedded (flags/ compiled and loaded offline) otherwise.
    unleash_url: str | None = None
    unleash_token: str | None = field(default=None, repr=False)
    refresh_interval: int = 5
    # Server mode: seconds between the SDK's reports of flag usage (evaluations per flag and
    # variant, shown in the Unleash UI) to the server. Unleash's default.
    metrics_interval: int = 60
    database_url: str | None = None
    # "churn:v1=http://127.0.0.1:3001,churn:v2=..." or the catalog file written by the demo.
    bento_urls: str | None = None
    forward_timeout: float = 2.0
    max_body_bytes: int = 1 << 20
    # Exposures written per transaction at most (fewer when fewer are queued). Large batches
    # under load: each random request/user id dirties its own index page, and SQLite writes
    # every dirty page to its log once per commit, so 10,000 a commit wrote far less than 2,000.
    event_batch_size: int = 10_000
    # Circuit breaker per bento: this many failures in a row open it; a probe after the pause.
    circuit_failures: int = 5
    circuit_reset_seconds: float = 5.0
    # Shadow copies: a bounded queue (full -> dropped and counted), sent by a few threads.
    shadow_queue_size: int = 1000
    shadow_threads: int = 2
    shadow_timeout: float = 2.0
    # API keys (hashes only; see service/serving/keys.py). Default: data_dir / "api-keys".
    api_keys_file: str | None = None
    # Scopes required even when no key exists yet, comma-separated ("predict", "outcomes").
    # POST /v1/outcomes needs scope `outcomes` as soon as any key exists, whatever this says.
    require_keys: str = ""
    # /metrics needs a key with scope `metrics` when true (open by default, for scrapers).
    protect_metrics: bool = False
    # An outcome naming a user (no request id) counts when that user was exposed in its flag
    # within this many hours before it is posted; see service/serving/exposure_check.py.
    outcome_window_hours: float = 168.0
    # Events waiting for the store, per worker; beyond it they go straight to the spill file.
    event_queue_size: int = 100_000
    # How long the writer retries a failing store before spilling a batch to disk.
    store_retry_seconds: float = 2.0
    # /readyz answers 503 (not only reports it) while the event store is failing.
    ready_requires_store: bool = False

    @classmethod
    def load(cls, overrides: dict[str, Any] | None = None) -> Settings:
        """Defaults, then ROLLOUT_* and UNLEASH_* environment variables, then `overrides`."""
        settings = cls()
        env = _from_environment(settings)
        settings = replace(settings, **env)
        if overrides:
            settings = replace(settings, **_coerce_all(settings, overrides))
        return settings

    @property
    def event_store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'events.db'}"

    @property
    def keys_file(self) -> Path:
        return Path(self.api_keys_file) if self.api_keys_file else self.data_dir / "api-keys"

    @property
    def spill_dir(self) -> Path:
        """Events the store could not take (down, unwritable): replayed by `rollout events`."""
        return self.data_dir / "events-spill"

    @property
    def dead_letter_file(self) -> Path:
        """Events the store refused row by row."""
        return self.data_dir / "events-dead-letter.jsonl"

    @property
    def catalog_file(self) -> Path:
        return self.data_dir / "catalog.json"

    @property
    def bentoml_home(self) -> Path:
        return self.data_dir / "bentoml"

    @property
    def unleash_cache_dir(self) -> Path:
        return self.data_dir / "unleash-cache"


def confined(folder: Path, name: str, suffix: str = "") -> Path:
    """`folder/name+suffix`, refusing a name that would leave `folder` (`..`, `/`, a link).

    Flag names and run names from a command line, a decision file or Unleash become file names
    (guard status files, report folders); none may point anywhere else.
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{name!r} is not a plain name (no '/', '..' or empty names)")
    path = folder / f"{name}{suffix}"
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{name!r} resolves outside {folder}")
    return path


def _from_environment(settings: Settings) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in fields(settings):
        raw = os.environ.get(ENV_PREFIX + f.name.upper())
        if raw is not None:
            values[f.name] = raw
    # The conventional Unleash variable names work too.
    if "unleash_url" not in values and os.environ.get("UNLEASH_URL"):
        values["unleash_url"] = os.environ["UNLEASH_URL"]
    if "unleash_token" not in values:
        values["unleash_token"] = _read_token()
    values = {k: v for k, v in values.items() if v is not None}
    try:
        return _coerce_all(settings, values)
    except _BadValue as exc:  # name the variable the person set, not our field
        variable = ENV_PREFIX + exc.setting.upper()
        raise ConfigError(f"{variable}={exc.value!r}: {exc.problem}") from None


def _read_token() -> str | None:
    """Backend token from UNLEASH_API_TOKEN, or from the file named by UNLEASH_API_TOKEN_FILE."""
    if os.environ.get("UNLEASH_API_TOKEN"):
        return os.environ["UNLEASH_API_TOKEN"].strip()
    token_file = os.environ.get("UNLEASH_API_TOKEN_FILE")
    if token_file:
        # Unreadable: no token. Only server mode needs one, and it says which file failed.
        with contextlib.suppress(OSError):
            return Path(token_file).read_text(encoding="utf-8").strip()
    return None


class _BadValue(ValueError):
    """A setting's text that does not read as the setting's type."""

    def __init__(self, setting: str, value: str, problem: str) -> None:
        super().__init__(f"{setting}={value!r}: {problem}")
        self.setting, self.value, self.problem = setting, value, problem


def _coerce_all(settings: Settings, values: dict[str, Any]) -> dict[str, Any]:
    types = {f.name: type(getattr(settings, f.name)) for f in fields(settings)}
    unknown = set(values) - set(types)
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return {name: _coerce(name, types[name], value) for name, value in values.items()}


def _coerce(name: str, kind: type, value: Any) -> Any:
    if value is None:
        return None
    if issubclass(kind, Path):
        return Path(value)
    if kind is bool and isinstance(value, str):
        return _truth(name, value)
    if isinstance(value, str) and kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise _BadValue(name, value, f"expected {what}") from None
    return value


def _truth(name: str, text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("", "0", "false", "no", "off"):
        return False
    raise _BadValue(name, text, "expected true or false (1/0, yes/no, on/off)")
