"""The console's own settings: defaults, then ROLLOUT_CONSOLE_* variables, then overrides.

The rest (data folder, flags/, reports/, the event store, Unleash) comes from service.config,
exactly as for every other command, so the console shows what the selector and the guard use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from service.config import Settings

ENV_PREFIX = "ROLLOUT_CONSOLE_"
TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ConsoleSettings:
    # The selector whose /metrics and /readyz the Live page reads.
    selector_url: str = "http://127.0.0.1:8000"
    # Where operator keys are: a key with scope `operate` may act. None: the selector's own
    # API keys file (ROLLOUT_API_KEYS_FILE; `rollout keys create NAME --scopes operate`).
    operator_keys_file: Path | None = None
    # No action for anyone, whatever keys exist (a console on a shared screen).
    read_only: bool = False
    # Signs the session cookie; a random one per process when unset (logins end at restart).
    secret_key: str = field(default="", repr=False)
    # The Live page's window, and how often it samples the selector in the background.
    live_window_seconds: float = 300.0
    live_sample_seconds: float = 10.0

    @classmethod
    def load(cls, overrides: dict[str, Any] | None = None) -> ConsoleSettings:
        settings = cls()
        raw = {
            f.name: os.environ[ENV_PREFIX + f.name.upper()]
            for f in fields(cls)
            if ENV_PREFIX + f.name.upper() in os.environ
        }
        return replace(settings, **_coerce({**raw, **(overrides or {})}))

    def keys_file(self, settings: Settings) -> Path:
        return self.operator_keys_file or settings.keys_file


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    kinds = {f.name: f.type for f in fields(ConsoleSettings)}
    unknown = set(values) - set(kinds)
    if unknown:
        raise TypeError(f"unknown console setting(s): {', '.join(sorted(unknown))}")
    coerced: dict[str, Any] = {}
    for name, value in values.items():
        kind = str(kinds[name])
        if isinstance(value, str) and kind == "bool":
            value = value.strip().lower() in TRUE
        elif isinstance(value, str) and kind == "float":
            value = float(value)
        elif value is not None and "Path" in kind:
            value = Path(value)
        coerced[name] = value
    return coerced
