"""The local bento store, read side: the bentos built, their provenance, where each serves.

`rollout models list/show`, the gates and the model cards read bentos back through here; the
store's own YAML files are parsed directly so reading needs no BentoML import. `discard`
removes a version so that no half-built or failed bento stays behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from service.config import Settings
from service.flags.definitions import load_flags
from service.flags.documents import Doc, flag_doc
from service.registry.stable import stable_versions
from service.registry.versions import UnknownBento, VersionSpec


def discard(spec: VersionSpec, settings: Settings) -> None:
    """Remove the version's bento and model from the store: no half-built version stays.

    The store folders are removed directly (BentoML keeps no other index); a `latest`
    pointer naming the removed version is dropped so `bentoml list` stays consistent.
    """
    home = settings.bentoml_home
    for folder in (home / "bentos" / spec.family, home / "models" / spec.model_name):
        shutil.rmtree(folder / spec.version, ignore_errors=True)
        latest = folder / "latest"
        if latest.is_file() and latest.read_text(encoding="utf-8").strip() == spec.version:
            latest.unlink()


def _read_store_yaml(path: Path) -> dict[str, Any] | None:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return doc if isinstance(doc, dict) else None


# ---------------------------------------------------------------- the store (the registry)

# Beside BentoML's own files in each bento's folder: the model card and the gate report.
# They live in the bento's folder so they travel with it (`bentoml export` archives the
# folder) and go when it goes (`bentoml delete`, `discard`): a report cannot outlive its bento.
ROLLOUT_DIR = "rollout"


@dataclass(frozen=True)
class StoredBento:
    """A bento in the store with its model's provenance, read from the store's YAML files."""

    tag: str
    family: str
    version: str
    created: str
    labels: dict[str, str]
    model_tag: str
    model_metadata: dict[str, Any]
    path: Path
    model_path: Path | None
    schema: dict[str, Any]

    @property
    def rollout_dir(self) -> Path:
        """Where this bento's model card and gate report are kept."""
        return self.path / ROLLOUT_DIR

    def size_bytes(self) -> int:
        """Bytes on disk of the bento and the model it packages (what `bentoml serve` loads)."""
        folders = [self.path] + ([self.model_path] if self.model_path else [])
        return sum(
            f.stat().st_size
            for folder in folders
            for f in folder.rglob("*")
            if f.is_file() and ROLLOUT_DIR not in f.relative_to(folder).parts
        )


def stored_bento(tag: str, settings: Settings) -> StoredBento:
    """The bento `tag` (`family:version`) in the store; UnknownBento if it is not there."""
    name, _, version = tag.partition(":")
    home = settings.bentoml_home
    bento = _read_store_yaml(home / "bentos" / name / version / "bento.yaml") if version else None
    if not bento:
        known = ", ".join(b.tag for b in stored_bentos(settings)) or "none"
        raise UnknownBento(f"no bento {tag} in {home / 'bentos'}; built: {known}")
    models = [m for s in bento.get("services") or [] for m in s.get("models") or []]
    model_tag = str(models[0]["tag"]) if models else ""
    model_name, _, model_version = model_tag.partition(":")
    model_path = home / "models" / model_name / model_version if model_tag else None
    model = _read_store_yaml(model_path / "model.yaml") if model_path else None
    return StoredBento(
        tag=tag,
        family=name,
        version=version,
        created=str(bento.get("creation_time", "")),
        labels={str(k): str(v) for k, v in (bento.get("labels") or {}).items()},
        model_tag=model_tag,
        model_metadata=dict((model or {}).get("metadata") or {}),
        path=home / "bentos" / name / version,
        model_path=model_path if model else None,
        schema=dict(bento.get("schema") or {}),
    )


def stored_bentos(settings: Settings) -> list[StoredBento]:
    """Every bento in the store, by family, in creation order."""
    root = settings.bentoml_home / "bentos"
    found = sorted(root.glob("*/*/bento.yaml")) if root.is_dir() else []
    bentos = [stored_bento(f"{p.parent.parent.name}:{p.parent.name}", settings) for p in found]
    return sorted(bentos, key=lambda b: (b.family, b.created))


def serving_flags(tag: str, flags_dir: Path, bentos_dir: Path | None = None) -> list[str]:
    """Where `tag` serves according to flags/ (embedded mode; see `serving_in`); a flag without
    a default serves its family's stable version, declared in `bentos_dir`."""
    flag_set = load_flags(flags_dir)
    docs = []
    for flag in flag_set.flags.values():
        doc = flag_doc(flag)
        # flag_doc lists both environments; only those the file declares are the flag's.
        docs.append({**doc, "environments": {
            name: env for name, env in doc["environments"].items() if name in flag.environments
        }})  # fmt: skip
    return serving_in(tag, docs, stable_versions(bentos_dir) if bentos_dir is not None else {})


def serving_in(tag: str, docs: Iterable[Doc], stable: Mapping[str, str] | None = None) -> list[str]:
    """Where `tag` serves in these flag documents (from flags/ or read live from Unleash):
    `flag/environment (default, canary)` entries.

    The default (the flag's explicit one, else its family's stable version declared in
    `bentos_dir`) serves in every environment (flag off or no match); a variant serves where an
    enabled environment's strategy gives it weight.
    """
    found = []
    for doc in docs:
        variants = doc.get("variants") or {}
        default = doc.get("default") or (stable or {}).get(_family(doc) or "")
        for name, env in (doc.get("environments") or {}).items():
            roles = ["default"] if default == tag else []
            weighted = {
                v
                for s in env.get("strategies") or []
                if env.get("enabled")
                for v, w in (s.get("variants") or {}).items()
                if w
            }
            roles += sorted(v for v in weighted if variants.get(v) == tag)
            if roles:
                found.append(f"{doc.get('flag')}/{name} ({', '.join(roles)})")
    return found


def _family(doc: Doc) -> str | None:
    """The model family a flag document's bentos belong to (`churn` for `churn:v2`)."""
    tags = [doc.get("default"), *(doc.get("variants") or {}).values()]
    return next((t.partition(":")[0] for t in tags if isinstance(t, str) and ":" in t), None)
