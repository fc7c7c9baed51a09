"""Reproducible bentos: the packages a bento installs are the ones its model was trained with.

A pickled scikit-learn model is only safe to load with the scikit-learn that saved it. So the
build pins every package the family's `bentofile.yaml` names to the version installed in the
training environment (`pinned_bentofile`), and BentoML's `lock_packages: true` resolves the
rest: BentoML 1.4 keeps the input as `env/python/requirements.in` and writes the resolved lock
as `env/python/requirements.txt`, which `bentoml containerize` installs as it is.
`lock_problems` is the gate that checks a built bento: locked, and locked to the versions its
model records (`model.yaml` `context.framework_versions`).
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Any

import yaml

from service.errors import RolloutError
from service.registry.bentos import StoredBento, _read_store_yaml

PYTHON_ENV = Path("env") / "python"
LOCK_FILE = PYTHON_ENV / "requirements.txt"  # the input is requirements.in beside it
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;#]+)")


class LockError(RolloutError):
    """The bentofile cannot be pinned to the training environment (unknown or clashing pin)."""

    code = "bento_lock_failed"


def canonical(name: str) -> str:
    """PEP 503 name: `Scikit_Learn` and `scikit-learn` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_bentofile(bentofile: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The bentofile with each named package pinned to its installed version, and the pins.

    A bare name (`scikit-learn`) becomes `scikit-learn==<installed>`; an exact pin must equal
    what is installed, or the model would be trained with one version and served with another.
    Raises LockError naming the file and package otherwise, and when packages are not locked.
    """
    doc = yaml.safe_load(bentofile.read_text(encoding="utf-8")) or {}
    python = doc.get("python") or {}
    if python.get("lock_packages") is not True:
        raise LockError(f"{bentofile}: python.lock_packages: must be true (reproducible bentos)")
    pins: dict[str, str] = {}
    packages = []
    for index, entry in enumerate(python.get("packages") or []):
        name, version = _pin(bentofile, index, str(entry))
        pins[canonical(name)] = version
        packages.append(f"{name}=={version}")
    return {**doc, "python": {**python, "packages": packages}}, pins


def _pin(bentofile: Path, index: int, entry: str) -> tuple[str, str]:
    where = f"{bentofile}: python.packages[{index}]"
    match = _PINNED.match(entry.strip())
    name = match.group(1) if match else entry.strip()
    if not _NAME.match(name):
        raise LockError(f"{where}: '{entry}' must be a package name or name==version")
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        raise LockError(f"{where}: {name} is not installed in the training environment") from None
    if match and match.group(3) != installed:
        raise LockError(
            f"{where}: pins {name}=={match.group(3)} but the training environment has {installed}"
        )
    return name, installed


def write_pinned_bentofile(bentofile: Path, out: Path) -> dict[str, str]:
    """Write the pinned copy of `bentofile` to `out` (for `bentoml build -f`); the pins."""
    doc, pins = pinned_bentofile(bentofile)
    out.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return pins


def locked_versions(bento: StoredBento) -> dict[str, str] | None:
    """package -> version from the bento's lock; None when the bento was not locked.

    Unlocked, BentoML copies the input as it is; locked, the file is the resolution: every
    requirement an exact pin, and not the input itself.
    """
    try:
        text = (bento.path / LOCK_FILE).read_text(encoding="utf-8")
        given = (bento.path / PYTHON_ENV / "requirements.in").read_text(encoding="utf-8")
    except OSError:
        return None
    lines = [line.strip() for line in text.splitlines()]
    requirements = [line for line in lines if line and not line.startswith(("#", "-"))]
    pins = [_PINNED.match(line) for line in requirements]
    if text.strip() == given.strip() or not requirements or not all(pins):
        return None
    return {canonical(m.group(1)): m.group(3) for m in pins if m}


def trained_with(bento: StoredBento) -> dict[str, str]:
    """The framework versions the bento's model was saved with (BentoML's model context)."""
    model = _read_store_yaml(bento.model_path / "model.yaml") if bento.model_path else None
    versions = ((model or {}).get("context") or {}).get("framework_versions") or {}
    return {canonical(str(k)): str(v) for k, v in versions.items()}


def lock_problems(bento: StoredBento) -> list[str]:
    """Why `bento` would not rebuild into the same container, or [] when it would."""
    locked = locked_versions(bento)
    if locked is None:
        return [f"no {LOCK_FILE}: build with python.lock_packages: true in bentofile.yaml"]
    trained = trained_with(bento)
    if not trained:
        return ["the model records no framework version (model.yaml context.framework_versions)"]
    return [
        f"{name}: trained with {version}, locked to {locked.get(name, 'nothing')}"
        for name, version in sorted(trained.items())
        if locked.get(name) != version
    ]
