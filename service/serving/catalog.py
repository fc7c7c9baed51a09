"""The bento catalog: which bento tags the selector may route to, and where each one listens.

A variant whose payload names a tag that is not in the catalog is refused (the family's stable
bento serves instead), so a typo in the Unleash UI cannot send traffic nowhere. `LiveCatalog`
keeps it current: a bento served (or moved) after the selector started becomes routable within
the refresh interval.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.errors import ConfigError
from service.registry.stable import stable_versions
from service.registry.versions import VERSIONS_FILE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BentoCatalog:
    """A fixed catalog (the same read interface as `LiveCatalog`, which stays current)."""

    endpoints: dict[str, str]  # bento tag -> base URL
    stable: dict[str, str] = field(default_factory=dict)  # family -> stable bento tag
    version: int = 0

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
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: must be a JSON object {{tag: url}}")
        return cls({str(tag): str(url).rstrip("/") for tag, url in raw.items()})

    def save(self, path: Path) -> None:
        """Written atomically: a selector re-reading it never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(self.endpoints, indent=2) + "\n")
        os.replace(tmp, path)


# --- the catalog as of now: re-read when its files change ------------------------------------


class LiveCatalog:
    """The bentos that can serve, and each family's stable version, as of now.

    Sources: the fixed `ROLLOUT_BENTO_URLS` entries (they win for a tag they name), the catalog
    file (`<data_dir>/catalog.json`, {tag: url}), and the stable versions declared in
    `bentos/*/versions.yaml`. Every `interval` seconds at most, the first call checks whether a
    file changed (size and mtime, one stat each) and re-reads only then, so each worker of a
    pre-forking server follows a change within the interval, with no thread and no restart.
    A file that cannot be read keeps the last good state, and says so in the log.
    """

    def __init__(
        self,
        fixed: BentoCatalog,
        catalog_file: Path | None,
        bentos_dir: Path | None,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fixed = fixed
        self.catalog_file = catalog_file
        self.bentos_dir = bentos_dir
        self.interval = interval
        self.clock = clock
        self.version = 0  # bumped whenever the endpoints or the stable versions change
        self._endpoints = dict(fixed.endpoints)
        self._stable: dict[str, str] = {}
        self._seen: tuple[Any, ...] | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()
        self.refresh()

    # The read interface of BentoCatalog, always current.
    @property
    def endpoints(self) -> dict[str, str]:
        self._maybe_refresh()
        return self._endpoints

    def url(self, tag: str) -> str | None:
        self._maybe_refresh()
        return self._endpoints.get(tag)

    def __contains__(self, tag: object) -> bool:
        self._maybe_refresh()
        return tag in self._endpoints

    @property
    def stable(self) -> dict[str, str]:
        """family -> stable bento tag."""
        self._maybe_refresh()
        return self._stable

    def _maybe_refresh(self) -> None:
        if self.clock() >= self._next_check:
            self.refresh()

    def refresh(self) -> bool:
        """Re-read the sources if any changed; True when the catalog changed."""
        with self._lock:
            self._next_check = self.clock() + self.interval
            seen = self._fingerprint()
            if seen == self._seen:
                return False
            self._seen = seen
            return self._reload()

    def _fingerprint(self) -> tuple[Any, ...]:
        files = [self.catalog_file] if self.catalog_file else []
        if self.bentos_dir is not None:
            files += sorted(self.bentos_dir.glob(f"*/{VERSIONS_FILE}"))
        return tuple((str(f), *_stat(f)) for f in files)

    def _reload(self) -> bool:
        endpoints, stable = dict(self._endpoints), dict(self._stable)
        try:
            if self.catalog_file is not None:
                loaded = BentoCatalog.load(self.catalog_file).endpoints
                endpoints = {**loaded, **self.fixed.endpoints}
            if self.bentos_dir is not None:
                stable = stable_versions(self.bentos_dir)
        except ConfigError as exc:
            log.error("catalog not reloaded, keeping the last good one: %s", exc.message)
            self._seen = None  # try again at the next check
        changed = (endpoints, stable) != (self._endpoints, self._stable)
        if changed:
            added = sorted(set(endpoints) - set(self._endpoints))
            log.info("catalog reloaded: %d bento(s), new: %s", len(endpoints), added or "none")
            self._endpoints, self._stable = endpoints, stable
            self.version += 1
        return changed


# Either kind serves the request path: routing, forwarding and shadows read only this interface.
Catalog = BentoCatalog | LiveCatalog


def _stat(path: Path) -> tuple[int, int]:
    try:
        info = path.stat()
    except OSError:
        return (-1, -1)
    return (info.st_mtime_ns, info.st_size)
