"""Model versions as bentos: which ones are declared, and building them (`rollout models build`).

Each family folder under `bentos/` declares its versions in `versions.yaml`; each version
becomes the bento `family:version` packaging the BentoML model `<model_name>:version`.

`declared_bentos` only reads YAML, so the selector and the flag validator can learn which bento
tags exist without importing BentoML (slow to import, and the selector never needs it). Building
runs BentoML in subprocesses with `BENTOML_HOME` set: the store location is fixed per process
once BentoML has used it, and the bento's own `service.py` must be imported by a clean
interpreter, where the module name `service` is not already this package.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from service.bento_process import bentoml_env, bentoml_executable
from service.config import Settings
from service.errors import ConfigError, RolloutError

VERSIONS_FILE = "versions.yaml"
# BentoML tag names and versions: lowercase for names; no ':' or '/' in either.
_TAG_PART = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
# Packages whose version changes what a build produces.
_BUILD_PACKAGES = ("bentoml", "scikit-learn", "numpy", "pandas")


class BuildError(RolloutError):
    """Training a version or building its bento failed; the message carries the output's tail."""

    code = "bento_build_failed"


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
            },
            "change": self.change,
            "serving": self.serving,
        }

    def digest(self) -> str:
        """sha256 of the canonical JSON of `to_dict()`."""
        return _sha256_json(self.to_dict())


@dataclass(frozen=True)
class BuiltBento:
    """The outcome of building one version (or finding it already built)."""

    tag: str
    model_tag: str
    data_fingerprint: str
    model_hash: str
    recipe: str
    skipped: bool
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


Progress = Callable[[str], None]


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


# ---------------------------------------------------------------- building


def build_all(
    settings: Settings, progress: Progress = lambda _: None, force: bool = False
) -> list[BuiltBento]:
    """Train, save and build every declared version; unchanged ones are skipped.

    A version is unchanged when its bento exists and carries the same recipe (spec, training
    data fingerprint, family code, package versions) and the same model hash as its model.
    """
    specs = declared_bentos(settings.bentos_dir)
    return [build_version(spec, settings, progress, force) for spec in specs.values()]


def build_version(
    spec: VersionSpec, settings: Settings, progress: Progress = lambda _: None, force: bool = False
) -> BuiltBento:
    """Build one version into the store at `settings.bentoml_home` (replacing a stale build).

    Raises BuildError if training or `bentoml build` fails, with the tail of their output.
    """
    started = time.perf_counter()
    family = training_module(spec.family_dir)
    data_fingerprint = family.data_fingerprint(spec)
    recipe = _recipe(spec, data_fingerprint)
    current = None if force else _current_build(settings.bentoml_home, spec, recipe)
    if current is not None:
        progress(f"{spec.bento_tag}: up to date (model hash {current['model_hash'][:12]})")
        return _built(spec, current, recipe, skipped=True, started=started)
    progress(f"{spec.bento_tag}: training {spec.kind} on {spec.training_rows} rows")
    trained = _train(spec, settings, recipe)
    progress(f"{spec.bento_tag}: building bento (model hash {trained['model_hash'][:12]})")
    _bento_build(spec, settings, trained, recipe)
    progress(f"{spec.bento_tag}: built in {time.perf_counter() - started:.1f}s")
    return _built(spec, trained, recipe, skipped=False, started=started)


def _built(
    spec: VersionSpec, info: Mapping[str, Any], recipe: str, skipped: bool, started: float
) -> BuiltBento:
    return BuiltBento(
        tag=spec.bento_tag,
        model_tag=spec.model_tag,
        data_fingerprint=info["data_fingerprint"],
        model_hash=info["model_hash"],
        recipe=recipe,
        skipped=skipped,
        seconds=time.perf_counter() - started,
        metrics=dict(info.get("metrics", {})),
    )


def training_module(family_dir: Path) -> ModuleType:
    """The family's `train.py`, imported by path (bentos/ is not a package); cached per family."""
    path = family_dir / "train.py"
    name = f"_rollout_train_{family_dir.name}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise BuildError(f"{path}: cannot import the family's training module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def _recipe(spec: VersionSpec, data_fingerprint: str) -> str:
    """What determines the build's output: same recipe, same bento (training is seeded)."""
    code = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(spec.family_dir.iterdir())
        if p.is_file() and p.suffix in {".py", ".yaml", ".yml"} and p.name != VERSIONS_FILE
    }
    packages = {name: importlib.metadata.version(name) for name in _BUILD_PACKAGES}
    return _sha256_json(
        {"spec": spec.to_dict(), "data": data_fingerprint, "code": code, "packages": packages}
    )


def _current_build(home: Path, spec: VersionSpec, recipe: str) -> dict[str, Any] | None:
    """The stored model's labels and metrics if bento and model are there and up to date.

    Reads the store's YAML files directly (`<home>/bentos/<name>/<version>/bento.yaml`) so a
    no-op build does not pay for importing BentoML; an unreadable store just means a rebuild.
    """
    bento = _read_store_yaml(home / "bentos" / spec.family / spec.version / "bento.yaml")
    model = _read_store_yaml(home / "models" / spec.model_name / spec.version / "model.yaml")
    if not bento or not model:
        return None
    bento_labels, model_labels = bento.get("labels") or {}, model.get("labels") or {}
    if bento_labels.get("recipe") != recipe or model_labels.get("recipe") != recipe:
        return None
    if not bento_labels.get("model_hash") or bento_labels.get("model_hash") != model_labels.get(
        "model_hash"
    ):
        return None
    metrics = (model.get("metadata") or {}).get("metrics", {}).get("overall", {})
    return {**model_labels, "metrics": metrics}


def _read_store_yaml(path: Path) -> dict[str, Any] | None:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return doc if isinstance(doc, dict) else None


def _train(spec: VersionSpec, settings: Settings, recipe: str) -> dict[str, Any]:
    """Run the family's `train.py` for one version; returns its JSON summary."""
    with tempfile.TemporaryDirectory(prefix="rollout-train-") as tmp:
        result = Path(tmp) / "result.json"
        command = [
            sys.executable,
            str(spec.family_dir / "train.py"),
            spec.version,
            "--label",
            f"recipe={recipe}",
            "--result-file",
            str(result),
        ]
        env = bentoml_env(settings.bentoml_home)
        # train.py imports this package: make it this checkout's, whatever is installed.
        paths = [str(settings.root), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        _run(command, env, cwd=spec.family_dir, what=f"training {spec.bento_tag}")
        summary: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    return summary


def _bento_build(
    spec: VersionSpec, settings: Settings, trained: Mapping[str, Any], recipe: str
) -> None:
    """`bentoml build` the family folder as `family:version`, packaging `model_name:version`.

    The version travels as a bento argument: BentoML stores it in the bento and hands it back to
    `service.py` at serve time, so the served model is the one packaged at build time.
    """
    labels = {
        "family": spec.family,
        "version": spec.version,
        "recipe": recipe,
        "data_fingerprint": trained["data_fingerprint"],
        "model_hash": trained["model_hash"],
    }
    command = [
        str(bentoml_executable()),
        "build",
        str(spec.family_dir),
        "--bentofile",
        str(spec.family_dir / "bentofile.yaml"),
        "--version",
        spec.version,
        "--arg",
        f"version={spec.version}",
        *[arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")],
        "--output",
        "tag",
    ]
    env = bentoml_env(settings.bentoml_home)
    output = _run(command, env, cwd=spec.family_dir, what="bentoml build")
    if f"__tag__:{spec.bento_tag}" not in output:
        raise BuildError(f"bentoml build did not report {spec.bento_tag}:\n{_tail(output)}")


def _run(command: list[str], env: dict[str, str], cwd: Path, what: str) -> str:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise BuildError(f"{what} failed (exit {done.returncode}):\n{_tail(output)}")
    return output


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _sha256_json(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
