"""The bento catalog: which bento tags the selector may route to, and where each one listens.

A variant whose payload names a tag that is not in the catalog is refused (the flag's
default serves instead), so a typo in the Unleash UI cannot send traffic nowhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from service.errors import ConfigError


@dataclass(frozen=True)
class BentoCatalog:
    endpoints: dict[str, str]  # bento tag -> base URL

    def url(self, tag: str) -> str | None:
        return self.endpoints.get(tag)

    def __contains__(self, tag: object) -> bool:
        return tag in self.endpoints

    @classmethod
    def parse(cls, spec: str) -> BentoCatalog:
        """From "churn:v1=http://127.0.0.1:3001,churn:v2=http://127.0.0.1:3002"."""
        endpoints = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            tag, sep, url = item.rpartition("=")
            if not sep or not tag or not url.startswith(("http://", "https://")):
                raise ConfigError(f"bento_urls: '{item}' is not of the form family:version=URL")
            endpoints[tag] = url.rstrip("/")
        return cls(endpoints)

    @classmethod
    def load(cls, path: Path) -> BentoCatalog:
        """From the JSON file `rollout demo` and `rollout models serve` write: {tag: url}."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls({})
        except ValueError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        return cls({str(tag): str(url).rstrip("/") for tag, url in raw.items()})

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.endpoints, indent=2) + "\n", encoding="utf-8")
