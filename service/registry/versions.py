"""Declared model versions: which `family:version` bentos exist on paper.

Each family folder under `bentos/` declares its versions in `versions.yaml`; each version
becomes the bento `family:version` packaging the BentoML model `<model_name>:version`. This
module only reads YAML, so the selector and the flag validator can learn which bento tags exist
without importing BentoML or pandas (slow to import, and the selector never needs them).
Building them is `registry.build`; the bentos actually in the store are `registry.bentos`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from service.errors import ConfigError, RolloutError

VERSIONS_FILE = "versions.yaml"
GATES_FILE = "gates.yaml"
# BentoML tag names and versions: lowercase for names; no ':' or '/' in either.
_TAG_PART = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


class UnknownBento(RolloutError):
    """A tag names no declared version or no bento in the store."""

    code = "unknown_bento"


@dataclass(frozen=True)
class VersionSpec:
    """One declared model version: how to train it and which bento it becomes."""

    family: str
    version: str
    model_name: str
    kind: str
    params: dict[str, Any]
    features: tuple[str, ...]
    training_rows: int
    training_seed: int
    holdout: float
    change: str
    serving: dict[str, Any]
    family_dir: Path = field(compare=False)
    # The training data: a later period can drift (population.drifted_training_data); a pinned
    # snapshot (sha256) must be what the generator settings produce, or the build stops.
    drift: float = 0.0
    period: str = ""
    snapshot: str | None = None

    @property
    def bento_tag(self) -> str:
        """The bento this version becomes, e.g. `churn:v2`."""
        return f"{self.family}:{self.version}"

    @property
    def model_tag(self) -> str:
        """The BentoML model the bento packages, e.g. `churn-model:v2`."""
        return f"{self.model_name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """Everything that defines the version, JSON-ready (the folder is left out)."""
        return {
            "family": self.family,
            "version": self.version,
            "model_name": self.model_name,
            "kind": self.kind,
            "params": self.params,
            "features": list(self.features),
            "training": {
                "rows": self.training_rows,
                "seed": self.training_seed,
                "holdout": self.holdout,
                "drift": self.drift,
                "period": self.period,
                "snapshot": self.snapshot or "",  # BentoML metadata refuses None
            },
            "change": self.change,
            "serving": self.serving,
        }

    def digest(self) -> str:
        """sha256 of the canonical JSON of `to_dict()`."""
        return _sha256_json(self.to_dict())


# ---------------------------------------------------------------- declared versions (no BentoML)


def declared_bentos(bentos_dir: Path) -> dict[str, VersionSpec]:
    """All `family:version` tags declared in `bentos_dir/*/versions.yaml`, in declared order.

    Raises ConfigError naming the file and field when a declaration is invalid or a tag repeats.
    """
    specs: dict[str, VersionSpec] = {}
    for path in sorted(Path(bentos_dir).glob(f"*/{VERSIONS_FILE}")):
        for spec in load_versions(path):
            if spec.bento_tag in specs:
                raise ConfigError(f"{path}: bento {spec.bento_tag} is declared twice")
            specs[spec.bento_tag] = spec
    return specs


def load_versions(path: Path) -> list[VersionSpec]:
    """The versions declared in one family's `versions.yaml` (defaults merged in)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    family = _require(path, doc, "family", str)
    if family != path.parent.name:
        raise ConfigError(f"{path}: family: '{family}' must match its folder '{path.parent.name}'")
    _check_tag_part(path, "family", family)
    entries = _require(path, doc, "versions", list)
    return [_parse_version(path, doc, i, entry) for i, entry in enumerate(entries)]


def _parse_version(path: Path, doc: dict[str, Any], index: int, entry: Any) -> VersionSpec:
    where = f"versions[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: {where}: must be a mapping")
    defaults = doc.get("defaults") or {}
    version = _require(path, entry, "version", str, where)
    _check_tag_part(path, f"{where}.version", version)
    model = _require(path, entry, "model", dict, where)
    training = {**defaults.get("training", {}), **entry.get("training", {})}
    return VersionSpec(
        family=doc["family"],
        version=version,
        model_name=_require(path, doc, "model_name", str),
        kind=_require(path, model, "kind", str, f"{where}.model"),
        params=dict(model.get("params") or {}),
        features=tuple(_require(path, entry, "features", list, where)),
        training_rows=int(_require(path, training, "rows", int, f"{where}.training")),
        training_seed=int(_require(path, training, "seed", int, f"{where}.training")),
        holdout=float(_require(path, training, "holdout", float, f"{where}.training")),
        change=_require(path, entry, "change", str, where),
        serving={**defaults.get("serving", {}), **entry.get("serving", {})},
        family_dir=path.parent,
        drift=float(training.get("drift", 0.0)),
        period=str(training.get("period", "")),
        snapshot=training.get("snapshot"),
    )


def _require(path: Path, doc: Mapping[str, Any], key: str, kind: type, where: str = "") -> Any:
    value = doc.get(key)
    # YAML reads 0.25 as float and 20000 as int; an int is fine where a float is wanted.
    ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
    if value is None or isinstance(value, bool) or not ok or value in ("", []):
        name = f"{where}.{key}" if where else key
        raise ConfigError(f"{path}: {name}: required, a non-empty {kind.__name__}")
    return value


def _check_tag_part(path: Path, name: str, value: str) -> None:
    if not _TAG_PART.match(value):
        raise ConfigError(
            f"{path}: {name}: '{value}' is not a valid bento tag part "
            "(lowercase letters, digits, '.', '_', '-'; at most 63 characters)"
        )


def _sha256_json(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
